"""Names under which format-0 churn models (registered before the model was saved as data)
were pickled; they load through ``retention_pipelines.churn_model``."""

from retention_pipelines.churn_model.legacy import ChurnModel  # noqa: F401
from retention_pipelines.churn_model.pyfunc import FormatZeroPyfunc as ChurnPyfunc  # noqa: F401
