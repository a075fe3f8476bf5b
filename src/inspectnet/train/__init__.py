"""Training: the LightningModule, the three approaches and ``train()``."""
