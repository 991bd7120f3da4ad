"""The benchmark models: the paper's ResNet18 models (`dense`: CityScapes and NYU-v2, `grasp`:
MetaGraspNet) and small models for CPU runs (`small`). Each follows the library's
`mtlcheck.models.MultiTaskModel` protocol."""
