"""Fine-tuning of the fracture classifier: ``train.fit.fit(TrainConfig)`` is the entry point."""
