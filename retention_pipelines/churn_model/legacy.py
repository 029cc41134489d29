"""Format 0: churn models registered before the model was saved as data.

Those MLflow models are a cloudpickle of the objects training produced, pickled under the
names they had then: ``retention_pipelines.core.model.ChurnPyfunc`` and ``.ChurnModel``,
``retention_pipelines.core.features.FeatureEncoder``, and ``Baseline`` and ``Calibrator`` of
``retention_pipelines.core.training`` (with scikit-learn models inside). Those names still
resolve, to the classes below and to the training classes, and a loaded format-0 model is
converted into the current :class:`~retention_pipelines.churn_model.model.ChurnModel`: the
same encoder levels, booster, coefficients and calibrator, hence the same probabilities. The
MLflow class of format 0 is :class:`~retention_pipelines.churn_model.pyfunc.FormatZeroPyfunc`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

from retention_pipelines.churn_model import encoding

if TYPE_CHECKING:  # the boosters' modules load with the model, not with this module
    from retention_pipelines.churn_model.model import ChurnModel as CurrentModel
    from retention_pipelines.churn_model.parts import Calibrator, LinearPart

# Format 0 did not record its flag columns: they were these, between categories and numbers.
FORMAT_0_BOOLEANS: Final[tuple[str, ...]] = (
    "is_senior_citizen",
    "has_partner",
    "has_dependents",
    "has_phone_service",
    "is_paperless_billing",
    "has_internet",
    "has_fiber_optic",
    "has_dsl",
    "is_automatic_payment",
    "streaming_bundle",
    "protection_bundle",
)


@dataclass
class FeatureEncoder:
    """Format 0's encoder: levels and numeric statistics, its columns implied."""

    categories: dict[str, list[str]] = field(default_factory=dict)
    numeric_medians: dict[str, float] = field(default_factory=dict)
    numeric_scales: dict[str, tuple[float, float]] = field(default_factory=dict)

    def upgrade(self) -> encoding.FeatureEncoder:
        return encoding.FeatureEncoder(
            categories={name: list(levels) for name, levels in self.categories.items()},
            booleans=FORMAT_0_BOOLEANS,
            numeric_medians=dict(self.numeric_medians),
            numeric_scales={name: tuple(scale) for name, scale in self.numeric_scales.items()},  # type: ignore[misc]
        )


@dataclass
class ChurnModel:
    """Format 0's model: training's objects, scikit-learn parts included."""

    kind: str
    encoder: FeatureEncoder
    booster: Any
    calibrator: Any  # core.training.Calibrator: method, isotonic, sigmoid
    linear: Any = None  # core.training.Baseline: encoder, model, design_means
    tree_weight: float = 1.0

    def upgrade(self) -> CurrentModel:
        from retention_pipelines.churn_model.model import ChurnModel as CurrentModel  # noqa: PLC0415

        return CurrentModel(
            kind=self.kind,  # type: ignore[arg-type]
            encoder=self.encoder.upgrade(),
            booster=self.booster,
            calibrator=_calibrator(self.calibrator),
            linear=_linear(self.linear) if self.linear is not None else None,
            tree_weight=float(self.tree_weight),
        )


def _calibrator(old: Any) -> Calibrator:
    from retention_pipelines.churn_model.parts import Calibrator  # noqa: PLC0415

    return Calibrator.from_fitted(
        old.method, old.isotonic if old.method == "isotonic" else old.sigmoid
    )


def _linear(old: Any) -> LinearPart:
    from retention_pipelines.churn_model.parts import LinearPart  # noqa: PLC0415

    return LinearPart.from_fitted(old.model, old.design_means)
