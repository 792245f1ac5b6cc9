"""Named, versioned feature sets (which columns a model sees), per task mode.

`paper_if` is the reference's frozen list of 50 "important features" (spec 6.1) in its order, with the three
names the released extractor no longer produces restored (P5). The two ablations are derived from it by
each feature's signal group, as the reference did: "IF - gaze" keeps text, mouse and the webcam's
`camera_green` count; "IF - mouse" keeps text and gaze. Cross-modality features are in neither.
The version of a set is its schema version plus a hash of its ordered names, so any change of membership
or order changes the version a model is pinned to.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

__all__ = ["FEATURE_SETS", "FeatureSet", "feature_group", "get_feature_set"]

SCHEMA_VERSION = "1"

PAIRWISE_IF: tuple[str, ...] = (
    "mouse_max_idx_right",
    "gaze_left_reviewing_engaged_time_s",
    "gaze_max_idx_right",
    "response_A_gaze_overall_attention_ratio",
    "response_length_left",
    "user_query_length",
    "response_B_mouse_overall_attention_ratio",
    "gaze_total_entries_right",
    "response_length_right",
    "response_B_mouse_focused_engagement_ratio",
    "gaze_right_reviewing_engaged_time_s",
    "response_A_gaze_focused_engagement_ratio",
    "response_A_gaze_window_001",
    "gaze_max_idx_left",
    "gaze_onscreen_points_right",
    "response_A_mouse_overall_attention_ratio",
    "mouse_onscreen_points_right",
    "response_B_gaze_window_019",
    "response_A_mouse_focused_engagement_ratio",
    "mouse_max_idx_left",
    "mouse_comparison_reviewing_time_ratio",
    "mouse_total_entries_right",
    "response_B_gaze_overall_attention_ratio",
    "mouse_comparison_reviewing_time_diff",
    "mouse_total_entries_left",
    "gaze_left_reviewing_engaged_pct",
    "response_B_gaze_window_002",
    "mouse_comparison_which_side_read_further",
    "response_A_gaze_window_000",
    "gaze_onscreen_points_left",
    "cross_modality_right_reviewing_duration_ratio_gaze_mouse",
    "mouse_right_reviewing_onscreen_ratio",
    "cross_modality_left_reviewing_duration_ratio_gaze_mouse",
    "gaze_total_entries_left",
    "gaze_left_reviewing_active_ratio",
    "response_A_gaze_normalized_avg_char_position",
    "response_B_mouse_window_019",
    "mouse_right_reviewing_offscreen_ratio",
    "response_A_mouse_window_000",
    "camera_green",
    "mouse_max_idx_ratio_right",
    "gaze_right_reviewing_onscreen_ratio",
    "response_A_gaze_window_002",
    "gaze_right_reviewing_offscreen_ratio",
    "mouse_left_reviewing_onscreen_ratio",
    "response_A_mouse_normalized_avg_char_position",
    "mouse_comparison_reviewing_activity_ratio",
    "response_B_gaze_window_000",
    "gaze_left_reviewing_onscreen_ratio",
    "mouse_onscreen_points_left",
)

POINTWISE_IF: tuple[str, ...] = (
    "response_length_left",
    "prev_response_A_gaze_window_002",
    "gaze_max_char_position_reached",
    "gaze_max_idx_left",
    "prev_response_A_mouse_window_002",
    "prev_response_A_gaze_normalized_avg_char_position",
    "prev_gaze_max_idx_ratio_left",
    "mouse_max_char_position_reached",
    "mouse_offscreen_time_reviewing_s",
    "prev_response_A_gaze_window_017",
    "prev_mouse_offscreen_time_composing_s",
    "prev_response_A_mouse_normalized_char_position_variance",
    "prev_response_A_mouse_window_000",
    "prev_gaze_composing_duration_s",
    "prev_mouse_composing_duration_s",
    "prev_cross_modality_reviewing_duration_ratio_gaze_mouse",
    "prev_mouse_reviewing_offscreen_ratio",
    "prev_mouse_composing_pct",
    "mouse_composing_active_ratio",
    "prev_mouse_lookback_time_s",
    "prev_response_A_gaze_normalized_char_position_variance",
    "prev_response_A_mouse_window_006",
    "prev_response_A_mouse_focused_engagement_ratio",
    "prev_response_A_gaze_window_000",
    "response_A_mouse_normalized_avg_char_position",
    "prev_gaze_reviewing_active_ratio",
    "prev_gaze_active_time_composing_s",
    "prev_gaze_composing_offscreen_ratio",
    "prev_response_A_gaze_window_003",
    "prev_response_A_mouse_window_001",
    "prev_cross_modality_composing_activity_ratio_gaze_mouse",
    "prev_mouse_reviewing_pct",
    "prev_gaze_offscreen_increase",
    "mouse_reviewing_composing_activity_ratio",
    "prev_mouse_active_time_composing_s",
    "prev_user_query_length",
    "mouse_lookback_time_s",
    "prev_response_A_gaze_window_018",
    "mouse_composing_reviewing_activity_diff",
    "prev_response_A_mouse_overall_attention_ratio",
    "gaze_reviewing_duration_s",
    "prev_response_A_gaze_window_001",
    "prev_mouse_reviewing_composing_activity_ratio",
    "prev_gaze_lookback_time_s",
    "mouse_reviewing_duration_s",
    "prev_gaze_composing_reviewing_activity_diff",
    "mouse_composing_lookback_ratio",
    "mouse_reviewing_pct",
    "prev_mouse_reviewing_duration_s",
    "prev_gaze_reviewing_composing_duration_ratio",
)


def feature_group(name: str) -> str:
    """Signal group of a feature, as the reference's `feature_group`: text, gaze, mouse or gaze+mouse."""
    if "cross_modality" in name:
        return "gaze+mouse"
    if "gaze" in name or "camera_green" in name:
        return "gaze"
    if "mouse" in name:
        return "mouse"
    return "text"


def _without(names: tuple[str, ...], group: str) -> tuple[str, ...]:
    keep = {"gaze": ("text", "mouse"), "mouse": ("text", "gaze")}[group]
    return tuple(n for n in names if feature_group(n) in keep or (group == "gaze" and n == "camera_green"))


@dataclass(frozen=True, slots=True)
class FeatureSet:
    """A feature set: ordered names per mode (None for `all`, which takes every computed feature)."""

    id: str
    description: str
    pairwise: tuple[str, ...] | None
    pointwise: tuple[str, ...] | None

    def names(self, mode: str, available: list[str] | None = None) -> list[str]:
        chosen = self.pairwise if mode == "pairwise" else self.pointwise
        if chosen is None:
            if available is None:
                raise ValueError(f"feature set {self.id!r} is defined by the extractor's output")
            # Sorted, so a table's column order and a single session's computation order give one version.
            return sorted(available)
        return list(chosen)

    def version(self, mode: str, available: list[str] | None = None) -> str:
        digest = hashlib.sha256("\n".join(self.names(mode, available)).encode()).hexdigest()[:10]
        return f"{SCHEMA_VERSION}.{mode}.{digest}"

    def needs_previous(self, mode: str, available: list[str] | None = None) -> bool:
        return any(n.startswith("prev_") for n in self.names(mode, available))


FEATURE_SETS: dict[str, FeatureSet] = {
    s.id: s
    for s in (
        FeatureSet(
            id="text",
            description="Text lengths only: the question and the response(s) (and the previous one, pointwise).",
            pairwise=("user_query_length", "response_length_left", "response_length_right"),
            pointwise=("user_query_length", "response_length_left", "prev_response_length_left"),
        ),
        FeatureSet(
            id="all",
            description="Every feature the extractor computes for the mode (spec 3.2-3.5).",
            pairwise=None,
            pointwise=None,
        ),
        FeatureSet(
            id="paper_if",
            description="The paper's 50 important features (spec 6.1 / 6.5), three missing pairwise names restored.",
            pairwise=PAIRWISE_IF,
            pointwise=POINTWISE_IF,
        ),
        FeatureSet(
            id="paper_if_no_gaze",
            description="paper_if without gaze features ('IF - Gaze'; keeps the webcam camera_green count).",
            pairwise=_without(PAIRWISE_IF, "gaze"),
            pointwise=_without(POINTWISE_IF, "gaze"),
        ),
        FeatureSet(
            id="paper_if_no_mouse",
            description="paper_if without mouse features ('IF - Mouse').",
            pairwise=_without(PAIRWISE_IF, "mouse"),
            pointwise=_without(POINTWISE_IF, "mouse"),
        ),
    )
}


def get_feature_set(feature_set_id: str) -> FeatureSet:
    try:
        return FEATURE_SETS[feature_set_id]
    except KeyError:
        raise KeyError(f"unknown feature set {feature_set_id!r}; known: {', '.join(FEATURE_SETS)}") from None
