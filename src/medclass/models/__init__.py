"""Models: the factory that builds networks from the config."""

from medclass.models.factory import check_model_name, create_model, default_normalization

__all__ = ["check_model_name", "create_model", "default_normalization"]
