"""The dashboard's charts, in Altair. Each one reads without colour: directions, series and
verdicts are also told by text labels, dash patterns or point shapes, and every mark has a
tooltip. The bands' colours differ in lightness as well as hue, so they survive greyscale."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

import altair as alt
import pandas as pd

from retention_pipelines.dashboard.queries import BANDS

BAND_COLOURS: Final[tuple[str, ...]] = ("#8c1c13", "#e59b3c", "#c8d6e5")  # dark, mid, light
RAISES, LOWERS = "raises risk", "lowers risk"
WIDTH: Final = "container"


def date_tip(field: str) -> alt.Tooltip:
    return alt.Tooltip(field, type="temporal", title="date", format="%Y-%m-%d", formatType="utc")


def date_x(field: str, title: str, *, bars: bool = False) -> alt.X:
    """A date axis in days (no hour ticks between two dates), in UTC so a browser west of
    Greenwich does not show the day before; ordinal for bars, which then get a band each."""
    if bars:
        return alt.X(
            f"utcyearmonthdate({field}):O",
            title=title,
            axis=alt.Axis(format="%b %d", formatType="utc", labelAngle=-45),
        )
    return alt.X(
        f"utcyearmonthdate({field}):T",
        title=title,
        axis=alt.Axis(format="%b %d", tickCount={"interval": "day", "step": 1}),
    )


def reason_frame(reasons: Sequence[tuple[str, float]]) -> pd.DataFrame:
    """A customer's reasons as rows: the reason, its signed contribution, its direction, a
    label that states both, and where the label goes (past the end of a bar that raises the
    risk; right of zero, where its row is empty, for one that lowers it)."""
    rows = [
        {
            "reason": text,
            "contribution": contribution,
            "direction": RAISES if contribution >= 0 else LOWERS,
            "label": f"{contribution:+.2f} {RAISES if contribution >= 0 else LOWERS}",
            "label_at": max(contribution, 0.0),
        }
        for text, contribution in reasons
    ]
    return pd.DataFrame(rows, columns=["reason", "contribution", "direction", "label", "label_at"])


def reasons_chart(reasons: Sequence[tuple[str, float]]) -> alt.LayerChart:
    """The reasons as a signed horizontal bar chart: right of zero pushes risk up, left pulls
    it down; each bar is labelled with its weight and direction."""
    frame = reason_frame(reasons)
    reach = 2.5 * max([abs(value) for value in frame["contribution"]] + [0.1])
    base = alt.Chart(frame).encode(
        y=alt.Y("reason:N", sort=list(frame["reason"]), title=None,
                axis=alt.Axis(labelLimit=320)),
        tooltip=["reason", alt.Tooltip("contribution:Q", format="+.3f"), "direction"],
    )  # fmt: skip
    bars = base.mark_bar(stroke="black", strokeWidth=0.5).encode(
        x=alt.X(
            "contribution:Q",
            title="Contribution to the risk (log-odds)",
            # Symmetric around zero, with room past each bar for its label.
            scale=alt.Scale(domain=[-reach, reach], nice=False),
        ),
        color=alt.Color(
            "direction:N",
            scale=alt.Scale(domain=[RAISES, LOWERS], range=[BAND_COLOURS[0], BAND_COLOURS[2]]),
            legend=alt.Legend(title=None),
        ),
    )
    zero = base.mark_rule(color="black").encode(x=alt.datum(0))
    labels = base.mark_text(align="left", dx=5).encode(x="label_at:Q", text="label:N")
    return alt.layer(bars, zero, labels).properties(width=WIDTH, height=48 * max(len(frame), 1))


def band_stack_frame(counts: pd.DataFrame) -> pd.DataFrame:
    """Customers per band per date with where each band's segment sits in the stack (high
    at the bottom) and a text label for segments tall enough to hold one."""
    frame = counts.copy()
    frame["band_order"] = frame["risk_band"].map({band: i for i, band in enumerate(BANDS)})
    frame = frame.sort_values(["snapshot_date", "band_order"]).reset_index(drop=True)
    frame["customers"] = frame["customers"].astype("int64")
    top = frame.groupby("snapshot_date")["customers"].cumsum()
    frame["middle"] = top - frame["customers"] / 2
    # Named where the segment is at least 8% as tall as the tallest bar: legible text.
    tallest = frame.groupby("snapshot_date")["customers"].sum().max() if len(frame) else 0
    frame["label"] = frame["risk_band"].where(frame["customers"] >= 0.08 * tallest, "")
    return frame


def band_stack_chart(counts: pd.DataFrame) -> alt.LayerChart:
    """Customers per band, stacked per date, each segment named when it has room."""
    frame = band_stack_frame(counts)
    bars = (
        alt.Chart(frame)
        .mark_bar(stroke="white", strokeWidth=0.5)
        .encode(
            x=date_x("snapshot_date", "Scored date", bars=True),
            y=alt.Y("customers:Q", stack="zero", title="Customers"),
            color=alt.Color(
                "risk_band:N",
                scale=alt.Scale(domain=list(BANDS), range=list(BAND_COLOURS)),
                legend=alt.Legend(title="Band (bottom to top)"),
            ),
            order=alt.Order("band_order:Q"),
            tooltip=[
                date_tip("snapshot_date"),
                "risk_band:N",
                alt.Tooltip("customers:Q", format=","),
            ],
        )
    )
    labels = (
        alt.Chart(frame)
        .mark_text(fontSize=10, color="black")
        .encode(x=date_x("snapshot_date", "Scored date", bars=True), y="middle:Q", text="label:N")
    )
    return alt.layer(bars, labels).properties(width=WIDTH, height=280)


def mean_probability_chart(means: pd.DataFrame) -> alt.Chart:
    """The mean churn probability per date: one line, its points labelled on hover."""
    return (
        alt.Chart(means)
        .mark_line(point=alt.OverlayMarkDef(color="black"), color="black")
        .encode(
            x=date_x("snapshot_date", "Scored date"),
            y=alt.Y(
                "mean_probability:Q", title="Mean churn probability", axis=alt.Axis(format="%")
            ),
            tooltip=[
                date_tip("snapshot_date"),
                alt.Tooltip("mean_probability:Q", format=".1%"),
                alt.Tooltip("customers:Q", format=","),
            ],
        )
        .properties(width=WIDTH, height=220)
    )


def reason_frequency_chart(reasons: pd.DataFrame) -> alt.LayerChart:
    """The most frequent first reasons as bars labelled with their share of the scores."""
    base = alt.Chart(reasons).encode(
        y=alt.Y("reason:N", sort="-x", title=None, axis=alt.Axis(labelLimit=320)),
        x=alt.X("customers:Q", title="Customers (first reason), summed over the dates"),
        tooltip=["reason", alt.Tooltip("customers:Q", format=","),
                 alt.Tooltip("share_of_customers:Q", format=".1%")],
    )  # fmt: skip
    bars = base.mark_bar(color=BAND_COLOURS[1], stroke="black", strokeWidth=0.5)
    labels = base.mark_text(align="left", dx=4).encode(
        text=alt.Text("share_of_customers:Q", format=".1%")
    )
    return alt.layer(bars, labels).properties(width=WIDTH, height=28 * max(len(reasons), 1))


def score_history_chart(history: pd.DataFrame) -> alt.LayerChart:
    """A customer's probability over dates; the point shape is the model version, and the
    version is written where a new one took over."""
    base = alt.Chart(history).encode(
        x=date_x("snapshot_date", "Scored date"),
        y=alt.Y(
            "churn_probability:Q",
            title="Churn probability",
            axis=alt.Axis(format="%"),
            scale=alt.Scale(domain=[0, 1]),
        ),
    )
    line = base.mark_line(color="grey")
    points = base.mark_point(filled=True, size=80, color="black").encode(
        shape=alt.Shape("model_version:N", legend=alt.Legend(title="Model version")),
        tooltip=[date_tip("snapshot_date"), alt.Tooltip("churn_probability:Q", format=".1%"),
                 "risk_band:N", "model_version:N", "top_reason_1:N"],
    )  # fmt: skip
    labels = base.mark_text(dy=-12).encode(text="version_label:N")
    return alt.layer(line, points, labels).properties(width=WIDTH, height=240)


def realised_auc_frame(performance: pd.DataFrame) -> pd.DataFrame:
    """Realised and training ROC AUC per score date in long form (``series``), the two told
    apart by their dash pattern."""
    frame = performance.rename(columns={"roc_auc": "realised", "training_roc_auc": "at training"})
    long = frame.melt(
        id_vars=["score_date", "model_version"],
        value_vars=["realised", "at training"],
        var_name="series",
        value_name="roc_auc",
    )
    return long.dropna(subset=["roc_auc"])


def realised_auc_chart(performance: pd.DataFrame) -> alt.Chart:
    """Realised ROC AUC per score date (solid, with points) against the training figure of
    the version that scored it (dashed)."""
    frame = realised_auc_frame(performance)
    return (
        alt.Chart(frame)
        .mark_line(point=alt.OverlayMarkDef(color="black"), color="black")
        .encode(
            x=date_x("score_date", "Score date"),
            y=alt.Y("roc_auc:Q", title="ROC AUC", scale=alt.Scale(zero=False)),
            strokeDash=alt.StrokeDash(
                "series:N",
                scale=alt.Scale(domain=["realised", "at training"], range=[[1, 0], [6, 4]]),
                legend=alt.Legend(title=None),
            ),
            tooltip=[
                date_tip("score_date"),
                "series:N",
                "model_version:N",
                alt.Tooltip("roc_auc:Q", format=".3f"),
            ],
        )
        .properties(width=WIDTH, height=240)
    )


def calibration_chart(bins: pd.DataFrame) -> alt.LayerChart:
    """Observed churn rate against mean predicted probability per bin; the dashed diagonal
    is perfect calibration and each point is labelled with its customers."""
    diagonal = (
        alt.Chart(pd.DataFrame({"p": [0.0, 1.0]}))
        .mark_line(strokeDash=[6, 4], color="grey")
        .encode(x="p:Q", y="p:Q")
    )
    base = alt.Chart(bins).encode(
        x=alt.X("mean_probability:Q", title="Mean predicted probability",
                scale=alt.Scale(domain=[0, 1]), axis=alt.Axis(format="%")),
        y=alt.Y("churn_rate:Q", title="Observed churn rate",
                scale=alt.Scale(domain=[0, 1]), axis=alt.Axis(format="%")),
    )  # fmt: skip
    points = base.mark_line(point=alt.OverlayMarkDef(color="black"), color="black").encode(
        tooltip=["bin", alt.Tooltip("mean_probability:Q", format=".1%"),
                 alt.Tooltip("churn_rate:Q", format=".1%"), alt.Tooltip("customers:Q", format=",")],
    )  # fmt: skip
    labels = base.mark_text(dy=-10, fontSize=10).encode(text=alt.Text("customers:Q", format=","))
    return alt.layer(diagonal, points, labels).properties(width=WIDTH, height=300)


def drift_share_chart(drift: pd.DataFrame) -> alt.LayerChart:
    """The share of drifted columns per date against the threshold (dashed); a cross marks a
    date with dataset drift, a circle one without."""
    frame = drift.assign(verdict=drift["dataset_drift"].map({True: "drift", False: "no drift"}))
    base = alt.Chart(frame).encode(x=date_x("snapshot_date", "Snapshot date"))
    share = base.mark_line(color="black").encode(
        y=alt.Y("drift_share:Q", title="Share of drifted columns", axis=alt.Axis(format="%"))
    )
    points = base.mark_point(size=90, filled=True, color="black").encode(
        y="drift_share:Q",
        shape=alt.Shape(
            "verdict:N",
            scale=alt.Scale(domain=["drift", "no drift"], range=["cross", "circle"]),
            legend=alt.Legend(title=None),
        ),
        tooltip=[date_tip("snapshot_date"), "verdict:N", alt.Tooltip("drift_share:Q", format=".1%"),
                 alt.Tooltip("drift_share_threshold:Q", format=".1%"), "drifted_columns:N"],
    )  # fmt: skip
    threshold = base.mark_line(strokeDash=[6, 4], color="grey").encode(y="drift_share_threshold:Q")
    return alt.layer(share, threshold, points).properties(width=WIDTH, height=220)
