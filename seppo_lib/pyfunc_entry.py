"""MLflow models-from-code entry: `save_pyfunc_model` logs this file; MLflow runs it to build the model."""

from mlflow.models import set_model

from seppo_lib.pyfunc_model import DiffusionPyfunc

set_model(DiffusionPyfunc())
