"""The Vision Transformer from scratch (stages `train_vit`, `evaluate_vit`): `model` (the ViT and
its attention rollout) and `data` (the three image sets it trains on)."""
