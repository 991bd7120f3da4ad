"""Every MTL method of the paper as an aggregator, plus the registry.

>>> from mtlcheck.aggregators import get_aggregator
>>> agg = get_aggregator("mgda")
>>> out = agg(G)               # G: (T, d) task gradients (or a Jacobian)
>>> out.direction, out.weights
"""

from mtlcheck.aggregators._base import (
    Aggregation,
    Aggregator,
    AggregatorTags,
    ProjectionMethod,
    SecondOrderMethod,
    SolverError,
    SolverFallbackWarning,
    WeightingAggregator,
)
from mtlcheck.aggregators._registry import (
    ENTRY_POINT_GROUP,
    aggregator_class,
    get_aggregator,
    level_aliases,
    list_aggregators,
    paper_name,
    register_aggregator,
)
from mtlcheck.aggregators.aligned_mtl import AlignedMTL
from mtlcheck.aggregators.cagrad import CAGrad
from mtlcheck.aggregators.config import ConFIG
from mtlcheck.aggregators.cosreg import CosReg
from mtlcheck.aggregators.cr_mogm import CRMOGM
from mtlcheck.aggregators.db_mtl import DBMTL
from mtlcheck.aggregators.dualproj import DualProj
from mtlcheck.aggregators.dwa import DWA
from mtlcheck.aggregators.ew import EW
from mtlcheck.aggregators.excess_mtl import ExcessMTL
from mtlcheck.aggregators.fairgrad import FairGrad
from mtlcheck.aggregators.famo import FAMO
from mtlcheck.aggregators.gls import GLS
from mtlcheck.aggregators.graddrop import GradDrop
from mtlcheck.aggregators.gradnorm import GradNorm
from mtlcheck.aggregators.gradvac import GradVac
from mtlcheck.aggregators.imtl import IMTL
from mtlcheck.aggregators.mgda import MGDA
from mtlcheck.aggregators.moco import MoCo
from mtlcheck.aggregators.modo import MoDo
from mtlcheck.aggregators.nash_mtl import NashMTL
from mtlcheck.aggregators.pcgrad import PCGrad
from mtlcheck.aggregators.published import (
    CosRegPublished,
    EWMean,
    GradNormPublished,
    GradVacPublished,
    NashMTLPublished,
)
from mtlcheck.aggregators.random_weighting import RGW, RLW
from mtlcheck.aggregators.sdmgrad import SDMGrad
from mtlcheck.aggregators.stch import STCH
from mtlcheck.aggregators.uncertainty import Uncertainty
from mtlcheck.aggregators.upgrad import UPGrad

__all__ = [
    "Aggregation",
    "Aggregator",
    "AggregatorTags",
    "ProjectionMethod",
    "SecondOrderMethod",
    "SolverError",
    "SolverFallbackWarning",
    "WeightingAggregator",
    "ENTRY_POINT_GROUP",
    "aggregator_class",
    "get_aggregator",
    "level_aliases",
    "list_aggregators",
    "paper_name",
    "register_aggregator",
    "AlignedMTL",
    "CAGrad",
    "CosReg",
    "DWA",
    "EW",
    "FAMO",
    "GradDrop",
    "GradNorm",
    "GradVac",
    "IMTL",
    "MGDA",
    "NashMTL",
    "PCGrad",
    "RGW",
    "RLW",
    "Uncertainty",
    "UPGrad",
    "DualProj",
    "ConFIG",
    "FairGrad",
    "GLS",
    "DBMTL",
    "STCH",
    "ExcessMTL",
    "MoDo",
    "SDMGrad",
    "MoCo",
    "CRMOGM",
    "CosRegPublished",
    "EWMean",
    "GradNormPublished",
    "GradVacPublished",
    "NashMTLPublished",
]


def __getattr__(name: str):
    # a name that moved: say where it went instead of a bare AttributeError (importing it from here
    # would make the methods import the kit, a circle)
    if name == "IDENTITIES":
        raise AttributeError(
            "mtlcheck.aggregators.IDENTITIES moved to mtlcheck.testing.identities.IDENTITIES (the kit's "
            "registry of defining properties derives it)"
        )
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
