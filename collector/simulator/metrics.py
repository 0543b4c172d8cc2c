"""Insights metric tables per API version and product type, and request validation.

Sources: reference §2.3, §2.5, §3.2, §3.3. Validation order follows what the real API appears
to do: the metric enum first (by request index), then deprecations, then per-type support,
then metric_type/period/breakdown compatibility.
"""

from __future__ import annotations

import dataclasses
import re

from collector.simulator import apierror

VERSIONS: tuple[str, ...] = tuple(f"v{n}.0" for n in range(18, 28))
OLDEST = VERSIONS[0]
_VERSION_RE = re.compile(r"^v(\d+)\.(\d+)$")

PERIODS = ("day", "week", "days_28", "month", "lifetime", "total_over_range")


def version_number(version: str) -> int | None:
    """``"v25.0"`` → 25; None for a string that is not a version."""
    match = _VERSION_RE.match(version)
    return int(match.group(1)) if match else None


# ---------------------------------------------------------------- account (IG user) metrics


@dataclasses.dataclass(frozen=True)
class AccountMetric:
    """What an account metric accepts."""

    periods: tuple[str, ...]
    total_value: bool = True
    time_series: bool = False
    breakdowns: tuple[str, ...] = ()
    follower_gated: bool = False
    demographic: bool = False


_DEMO_BREAKDOWNS = ("age", "city", "country", "gender")
_ACCOUNT: dict[str, AccountMetric] = {
    "reach": AccountMetric(
        ("day", "week", "days_28"), True, True, ("media_product_type", "follow_type")
    ),
    "impressions": AccountMetric(("day", "week", "days_28"), True, True),
    "views": AccountMetric(("day",), breakdowns=("follow_type", "media_product_type")),
    "accounts_engaged": AccountMetric(("day",)),
    "total_interactions": AccountMetric(("day",), breakdowns=("media_product_type",)),
    "likes": AccountMetric(("day",), breakdowns=("media_product_type",)),
    "comments": AccountMetric(("day",), breakdowns=("media_product_type",)),
    "shares": AccountMetric(("day",), breakdowns=("media_product_type",)),
    "saves": AccountMetric(("day",), breakdowns=("media_product_type",)),
    "replies": AccountMetric(("day",)),
    "reposts": AccountMetric(("day",)),
    "follows_and_unfollows": AccountMetric(
        ("day",), breakdowns=("follow_type",), follower_gated=True
    ),
    "profile_links_taps": AccountMetric(("day",), breakdowns=("contact_button_type",)),
    "follower_demographics": AccountMetric(
        ("lifetime",), breakdowns=_DEMO_BREAKDOWNS, follower_gated=True, demographic=True
    ),
    "engaged_audience_demographics": AccountMetric(
        ("lifetime",), breakdowns=_DEMO_BREAKDOWNS, follower_gated=True, demographic=True
    ),
    "reached_audience_demographics": AccountMetric(
        ("lifetime",), breakdowns=_DEMO_BREAKDOWNS, follower_gated=True, demographic=True
    ),
    "follower_count": AccountMetric(("day",), False, True, follower_gated=True),
    "online_followers": AccountMetric(("lifetime",), False, True, follower_gated=True),
    "profile_views": AccountMetric(("day",)),
    "website_clicks": AccountMetric(("day",)),
    "email_contacts": AccountMetric(("day",), True, True),
    "get_directions_clicks": AccountMetric(("day",), True, True),
    "phone_call_clicks": AccountMetric(("day",), True, True),
    "text_message_clicks": AccountMetric(("day",), True, True),
}
_ACCOUNT_ENUM = (
    "reach",
    "follower_count",
    "website_clicks",
    "profile_views",
    "online_followers",
    "accounts_engaged",
    "total_interactions",
    "likes",
    "comments",
    "shares",
    "saves",
    "replies",
    "engaged_audience_demographics",
    "reached_audience_demographics",
    "follower_demographics",
    "follows_and_unfollows",
    "profile_links_taps",
    "views",
    "reposts",
)
_CONTACT_METRICS = (
    "email_contacts",
    "get_directions_clicks",
    "phone_call_clicks",
    "text_message_clicks",
)
ACCOUNT_BREAKDOWN_ENUM = (
    "contact_button_type",
    "follow_type",
    "media_product_type",
    "age",
    "city",
    "country",
    "gender",
)
TIMEFRAMES = (
    "last_14_days",
    "last_30_days",
    "last_90_days",
    "prev_month",
    "this_month",
    "this_week",
)


def account_enum(version: int) -> tuple[str, ...]:
    """The account metric names a version accepts, in the order its error message lists them."""
    names = list(_ACCOUNT_ENUM)
    if version <= 20:
        pos = names.index("profile_views") + 1
        names[pos:pos] = _CONTACT_METRICS
    if version <= 21:
        names.insert(0, "impressions")
    return tuple(names)


def account_metric(name: str) -> AccountMetric:
    return _ACCOUNT[name]


def time_series_allowed(name: str, version: int) -> bool:
    """Time-series variants of profile_views/website_clicks left in v21 (§2.5)."""
    if name in ("profile_views", "website_clicks"):
        return version <= 20
    return _ACCOUNT[name].time_series


def account_deprecation(name: str, version: int) -> apierror.ApiError | None:
    if name == "impressions" and version >= 22:
        # Text as logged from the real API (gitroomhq/postiz-app#622).
        return apierror.ApiError(
            "Starting from version 22 and above, the impressions metric is no longer supported "
            "for the queried user. Please refer to the documentation at "
            "https://developers.facebook.com/docs/instagram-api/reference/ig-user/insights for "
            "a list of supported metrics.",
            code=100,
        )
    return None


def validate_account_request(
    metrics: list[str],
    *,
    version: int,
    period: str | None,
    metric_type: str | None,
    breakdowns: list[str],
    timeframe: str | None,
) -> str:
    """Check an account insights request; returns the effective metric_type."""
    enum = account_enum(version)
    for i, name in enumerate(metrics):
        if account_deprecation(name, version) is None and name not in enum:
            raise apierror.invalid_param(
                f"metric[{i}] must be one of the following values: {', '.join(enum)}"
            )
    for name in metrics:
        dep = account_deprecation(name, version)
        if dep is not None:
            raise dep
    if metric_type not in (None, "default", "total_value", "time_series"):
        raise apierror.invalid_param(
            "metric_type must be one of the following values: default, time_series, total_value"
        )
    effective = "total_value" if metric_type == "total_value" else "time_series"
    if effective == "time_series":
        need_tv = [m for m in metrics if not time_series_allowed(m, version)]
        if need_tv:
            raise apierror.invalid_param(
                f"The following metrics ({','.join(need_tv)}) should be specified with parameter "
                "metric_type=total_value"
            )
    else:
        need_ts = [m for m in metrics if not _ACCOUNT[m].total_value]
        if need_ts:
            raise apierror.invalid_param(
                f"The following metrics ({','.join(need_ts)}) should be specified with parameter "
                "metric_type=time_series"
            )
    if period is None:
        raise apierror.invalid_param("The parameter period is required")
    if period not in PERIODS:
        raise apierror.invalid_param(
            f"period must be one of the following values: {', '.join(PERIODS)}"
        )
    for name in metrics:
        allowed = _ACCOUNT[name].periods
        if effective == "total_value" and name in ("reach", "impressions"):
            allowed = ("day",)
        if period not in allowed:
            raise apierror.invalid_param(
                f"The following periods ({period}) are incompatible with the metric ({name})"
            )
    if effective == "total_value":
        for i, bd in enumerate(breakdowns):
            if bd not in ACCOUNT_BREAKDOWN_ENUM:
                raise apierror.invalid_param(
                    f"breakdown[{i}] must be one of the following values: "
                    f"{', '.join(ACCOUNT_BREAKDOWN_ENUM)}"
                )
        for name in metrics:
            spec = _ACCOUNT[name]
            bad = [bd for bd in breakdowns if bd not in spec.breakdowns]
            if bad or (len(breakdowns) > 1 and not spec.demographic):
                raise apierror.invalid_param(
                    f"Incompatible breakdowns ({','.join(breakdowns)}) for metric ({name})"
                )
    if timeframe is not None:
        for name in metrics:
            if not _ACCOUNT[name].demographic:
                continue
            allowed_tf: tuple[str, ...] = TIMEFRAMES
            if name != "follower_demographics" and version >= 20:
                allowed_tf = ("this_month", "this_week")
            if timeframe not in allowed_tf:
                raise apierror.invalid_param(
                    f"timeframe must be one of the following values: {', '.join(allowed_tf)}"
                )
    return effective


# ---------------------------------------------------------------- media metrics

_MEDIA_ENUM = (
    "impressions",
    "shares",
    "comments",
    "likes",
    "saved",
    "replies",
    "total_interactions",
    "navigation",
    "follows",
    "profile_visits",
    "profile_activity",
    "reach",
    "ig_reels_video_view_total_time",
    "ig_reels_avg_watch_time",
    "views",
    "thread_replies",
    "reposts",
    "quotes",
    "thread_shares",
    "threads_views",
    "threads_media_clicks",
    "reels_skip_rate",
    "threads_reposts",
    "facebook_views",
    "crossposted_views",
    "total_views",
    "total_likes",
    "total_comments",
    "link_clicks",
)
_REELS_PLAYS = ("plays", "clips_replays_count", "ig_reels_aggregated_all_plays_count")
MEDIA_BREAKDOWN_ENUM = (
    "follow_type",
    "surface_type",
    "action_type",
    "story_navigation_action_type",
)
MEDIA_BREAKDOWN_OF = {
    "navigation": "story_navigation_action_type",
    "profile_activity": "action_type",
}

_COMMON = (
    "views",
    "reach",
    "total_interactions",
    "shares",
    "reposts",
    "facebook_views",
    "total_views",
)
SUPPORTED: dict[str, frozenset[str]] = {
    "FEED": frozenset(
        (
            *_COMMON,
            "likes",
            "comments",
            "saved",
            "follows",
            "profile_visits",
            "profile_activity",
            "total_likes",
            "total_comments",
            "impressions",
            "video_views",
        )
    ),
    "REELS": frozenset(
        (
            *_COMMON,
            "likes",
            "comments",
            "saved",
            "ig_reels_avg_watch_time",
            "ig_reels_video_view_total_time",
            "reels_skip_rate",
            "crossposted_views",
            "total_likes",
            "total_comments",
            "video_views",
            *_REELS_PLAYS,
        )
    ),
    "STORY": frozenset(
        (
            *_COMMON,
            "follows",
            "profile_visits",
            "profile_activity",
            "navigation",
            "replies",
            "link_clicks",
            "impressions",
        )
    ),
}
#: media created after this (epoch seconds, 2024-07-02T00:00Z) never had impressions
IMPRESSIONS_CUTOFF = 1719878400.0


def media_enum(version: int) -> tuple[str, ...]:
    names = list(_MEDIA_ENUM)
    if version <= 21:
        names.extend(_REELS_PLAYS)
    if version <= 20:
        names.append("video_views")
    return tuple(names)


#: what only the Instagram API with Facebook Login serves (docs/graph-api-notes.md §2)
FACEBOOK_LOGIN_ONLY = frozenset({"total_likes", "total_comments", "total_views", "link_clicks"})


def validate_instagram_login_metrics(metrics: list[str], *, version: int) -> None:
    """The instagram host's own media metric set: the Facebook-Login-only ones are unknown."""
    enum = [m for m in media_enum(version) if m not in FACEBOOK_LOGIN_ONLY]
    for i, name in enumerate(metrics):
        if name in FACEBOOK_LOGIN_ONLY:
            raise apierror.invalid_param(
                f"metric[{i}] must be one of the following values: {', '.join(enum)}"
            )


def media_deprecation(name: str, version: int) -> apierror.ApiError | None:
    since = None
    if name in (*_REELS_PLAYS, "impressions") and version >= 22:
        since = "v22.0"
    elif name == "video_views" and version >= 21:
        since = "v21.0"
    if since is None:
        return None
    return apierror.ApiError(
        f"Starting from version {since} and above, the {name} metric is no longer supported "
        "for the queried media.",
        code=100,
    )


def unsupported_for_product(name: str) -> apierror.ApiError:
    return apierror.invalid_param(
        f"The Media Insights API does not support the {name} metric for this media product type."
    )


def validate_media_metrics(metrics: list[str], breakdowns: list[str], *, version: int) -> None:
    """Checks that don't depend on the media object (enum, deprecation, breakdown names)."""
    enum = media_enum(version)
    for i, name in enumerate(metrics):
        if media_deprecation(name, version) is None and name not in enum:
            raise apierror.invalid_param(
                f"metric[{i}] must be one of the following values: {', '.join(enum)}"
            )
    for name in metrics:
        dep = media_deprecation(name, version)
        if dep is not None:
            raise dep
    for i, bd in enumerate(breakdowns):
        if bd not in MEDIA_BREAKDOWN_ENUM:
            raise apierror.invalid_param(
                f"breakdown[{i}] must be one of the following values: "
                f"{', '.join(MEDIA_BREAKDOWN_ENUM)}"
            )
    if breakdowns:
        for name in metrics:
            if len(breakdowns) > 1 or MEDIA_BREAKDOWN_OF.get(name) != breakdowns[0]:
                raise apierror.invalid_param(
                    f"Incompatible breakdowns ({','.join(breakdowns)}) for metric ({name})"
                )


# ---------------------------------------------------------------- titles and descriptions

_TITLES: dict[str, tuple[str, str]] = {
    "reach": (
        "Accounts reached",
        "The number of unique accounts that have seen your {noun} at least once.",
    ),
    "views": ("Views", "Total number of times the {noun} has been played or displayed."),
    "impressions": ("Impressions", "Total number of times the {noun} has been seen."),
    "likes": ("Likes", "The number of likes on your {noun}."),
    "comments": ("Comments", "The number of comments on your {noun}."),
    "saved": ("Saved", "The number of saves of your {noun}."),
    "shares": ("Shares", "The number of shares of your {noun}."),
    "reposts": ("Reposts", "The number of times your {noun} was reposted."),
    "replies": ("Replies", "The total number of replies to the story."),
    "follows": ("Follows", "The number of accounts that started following you from this {noun}."),
    "profile_visits": (
        "Profile visits",
        "The number of times your profile was visited from this {noun}.",
    ),
    "profile_activity": (
        "Profile activity",
        "The number of actions people took on your profile after engaging with this {noun}.",
    ),
    "total_interactions": ("Interactions", "The number of interactions on your {noun}."),
    "navigation": (
        "Navigation",
        "This is the total number of actions taken from your story. These are made up of "
        "metrics like exited, forward, back and next story.",
    ),
    "ig_reels_avg_watch_time": (
        "Average watch time",
        "The average amount of time spent playing the reel.",
    ),
    "ig_reels_video_view_total_time": (
        "Watch time",
        "The total amount of time the reel was played, including replays.",
    ),
    "reels_skip_rate": ("Skip rate", "Percentage of views that skipped in the first 3 seconds."),
    "facebook_views": ("Facebook views", "The number of views of your {noun} on Facebook."),
    "crossposted_views": (
        "Crossposted views",
        "The number of views of your reel on Instagram and Facebook.",
    ),
    "total_views": ("Total views", "Views of your {noun} including boosted and crossposted views."),
    "total_likes": ("Total likes", "Likes on your {noun} including boosted and crossposted likes."),
    "total_comments": (
        "Total comments",
        "Comments on your {noun} including boosted and crossposted comments.",
    ),
    "link_clicks": ("Link clicks", "The number of taps on the link sticker of your story."),
    "plays": ("Plays", "The number of times the reel started to play."),
    "video_views": ("Video views", "The number of times the video was viewed."),
    "clips_replays_count": ("Replays", "The number of times the reel was replayed."),
    "ig_reels_aggregated_all_plays_count": (
        "Plays",
        "Plays of the reel on Instagram and Facebook.",
    ),
    "accounts_engaged": (
        "Accounts engaged",
        "The number of accounts that have interacted with your content, including in ads.",
    ),
    "saves": ("Saves", "The number of saves of your posts, reels and videos."),
    "follows_and_unfollows": (
        "Follows and unfollows",
        "The number of accounts that followed you and the number of accounts that unfollowed "
        "you or left Instagram in the selected time period.",
    ),
    "profile_links_taps": (
        "Profile links taps",
        "The number of taps on your business address, call button, email button and text button.",
    ),
    "follower_demographics": (
        "Follower demographics",
        "The demographic characteristics of followers, including countries, cities and gender "
        "distribution.",
    ),
    "engaged_audience_demographics": (
        "Engaged audience demographics",
        "The demographic characteristics of the engaged audience.",
    ),
    "reached_audience_demographics": (
        "Reached audience demographics",
        "The demographic characteristics of the reached audience.",
    ),
    "follower_count": ("Follower count", "Total number of unique accounts following this profile."),
    "online_followers": (
        "Online followers",
        "Total number of this profile's followers that were online during the specified period.",
    ),
    "profile_views": (
        "Profile views",
        "Total number of users who have viewed the business's profile within the specified period.",
    ),
    "website_clicks": (
        "Website clicks",
        "Total number of taps on the website link in this profile.",
    ),
    "email_contacts": ("Email contacts", "Total number of taps on the email link in this profile."),
    "get_directions_clicks": (
        "Get directions clicks",
        "Total number of taps on the directions link in this profile.",
    ),
    "phone_call_clicks": (
        "Phone call clicks",
        "Total number of taps on the call link in this profile.",
    ),
    "text_message_clicks": (
        "Text message clicks",
        "Total number of taps on the text message link in this profile.",
    ),
}
_ACCOUNT_DESCRIPTIONS = {
    "reach": (
        "The number of unique accounts that have seen your content, at least once, including "
        "in ads."
    ),
    "views": "The number of times your content was played or displayed.",
    "likes": "The number of likes on your posts, reels and videos.",
    "comments": "The number of comments on your posts, reels, videos and live videos.",
    "shares": "The number of shares of your posts, stories, reels, videos and live videos.",
    "total_interactions": (
        "The total number of post interactions, story interactions, reels interactions, video "
        "interactions and live video interactions."
    ),
    "replies": "The number of replies you received from your story.",
    "reposts": "The number of times your content was reposted.",
    "impressions": "The number of times your content was on screen.",
}


def title(name: str) -> str:
    return _TITLES.get(name, (name.replace("_", " ").capitalize(), ""))[0]


def media_description(name: str, product_type: str) -> str:
    noun = {"REELS": "reel", "STORY": "story"}.get(product_type, "post")
    return _TITLES.get(name, ("", ""))[1].format(noun=noun)


def account_description(name: str) -> str:
    if name in _ACCOUNT_DESCRIPTIONS:
        return _ACCOUNT_DESCRIPTIONS[name]
    return _TITLES.get(name, ("", ""))[1].format(noun="content")
