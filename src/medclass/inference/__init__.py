"""Using trained models: packages, prediction of files, explanations, export, the service, features and the
model registry. Restoring a module from a run's checkpoint is training's (medclass.training.restore)."""
