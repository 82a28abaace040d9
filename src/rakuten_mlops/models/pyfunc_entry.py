"""MLflow models-from-code entry point of the classifier's pyfunc model.

`save_pyfunc_model` / `log_pyfunc_model` pass this file's path as `python_model`: MLflow
copies it into the model and runs it at load time (with the bundled `rakuten_mlops`
package on the path), instead of unpickling a Python object. Not imported by the package.
"""

from mlflow.models import set_model

from rakuten_mlops.models.pyfunc import ProductClassifierModel

set_model(ProductClassifierModel())
