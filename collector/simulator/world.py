"""The simulated world: accounts, media and stories, and the ground truth of every value.

Everything is a pure function of (seed, object id, metric, time); the only state is what tests
change on purpose (token states, deleted media) and the lazily materialised story/media timeline,
which is itself a function of the seed and the time slot.
"""

from __future__ import annotations

import bisect
import dataclasses
import functools
import hashlib
import math
from collections.abc import Mapping, Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Literal, get_args
from zoneinfo import ZoneInfo

from collector import clock as clock_mod

PACIFIC = ZoneInfo("America/Los_Angeles")
DAY = 86400.0
HOUR = 3600.0

TokenState = Literal["ok", "expired", "invalid", "password_changed", "logged_out", "no_permission"]
TOKEN_STATES: tuple[str, ...] = get_args(TokenState)

SCOPES = (
    "instagram_basic",
    "instagram_manage_insights",
    "pages_read_engagement",
    "pages_show_list",
)
MAX_ACCOUNTS = 10_000
#: a refreshed Instagram Login token lives 60 days (refresh_access_token reference)
INSTAGRAM_TOKEN_LIFETIME = timedelta(days=60)
MAX_MEDIA = 10_000
MAX_STORIES = 100

_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
_SHORTCODE_ALPHABET = _ALPHABET + "_-"


def digest(*parts: object) -> int:
    """A stable 64-bit hash of the parts (the seed of every generated value)."""
    raw = "\x1f".join(str(p) for p in parts).encode()
    return int.from_bytes(hashlib.blake2b(raw, digest_size=8).digest(), "big")


def unit(*parts: object) -> float:
    """A stable pseudo-random number in [0, 1) for the parts."""
    return digest(*parts) / 18446744073709551616.0


def _chars(n: int, alphabet: str, *parts: object) -> str:
    out = []
    for i in range(n):
        out.append(alphabet[digest(*parts, i) % len(alphabet)])
    return "".join(out)


def split(total: int, weights: Sequence[float]) -> list[int]:
    """Split ``total`` into integer parts proportional to ``weights`` that sum to ``total``."""
    wsum = sum(weights) or 1.0
    parts = [math.floor(total * w / wsum) for w in weights]
    # The rounding remainder goes to the largest share so parts always add up to the total.
    if parts:
        biggest = max(range(len(weights)), key=lambda i: weights[i])
        parts[biggest] += total - sum(parts)
    return parts


def graph_time(when: datetime | float) -> str:
    """Format a time the way the Graph API does: ``2024-06-17T19:39:18+0000``."""
    if isinstance(when, float | int):
        return _graph_time_ts(float(when))
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S+0000")


@functools.lru_cache(maxsize=65536)
def _graph_time_ts(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S+0000")


@functools.lru_cache(maxsize=65536)
def day_bounds(day: date, zone: ZoneInfo = PACIFIC) -> tuple[float, float]:
    """Start and end (epoch seconds) of a calendar day in ``zone``."""
    start = datetime(day.year, day.month, day.day, tzinfo=zone)
    nxt = day + timedelta(days=1)
    end = datetime(nxt.year, nxt.month, nxt.day, tzinfo=zone)
    return start.timestamp(), end.timestamp()


def local_day(ts: float, zone: ZoneInfo = PACIFIC) -> date:
    """The calendar day in ``zone`` containing the instant ``ts``."""
    return datetime.fromtimestamp(ts, zone).date()


def pacific_day_bounds(day: date) -> tuple[float, float]:
    """Start and end (epoch seconds) of a US Pacific calendar day."""
    return day_bounds(day, PACIFIC)


def pacific_day(ts: float) -> date:
    """The US Pacific calendar day containing the instant ``ts``."""
    return local_day(ts, PACIFIC)


@dataclasses.dataclass(frozen=True, kw_only=True)
class WorldConfig:
    """Every knob of the simulator; all have defaults."""

    seed: int = 1
    accounts: int = 5
    media_per_account: int = 40
    stories_per_account: int = 3
    story_lifetime: timedelta = timedelta(hours=24)
    #: new stories per account per simulated day; None keeps ``stories_per_account`` live
    stories_per_day: float | None = None
    #: new feed/reels media per account per simulated day
    media_per_day: float = 0.0
    #: fraction of accounts kept under 100 followers (follower metrics come back empty)
    low_follower_fraction: float = 0.2
    #: fraction of accounts converted to business after their oldest media (100/2108006)
    converted_fraction: float = 0.2
    #: fraction of stories that never reach 5 viewers ("Not enough viewers")
    quiet_story_fraction: float = 0.15
    #: fraction of media shared to Facebook (facebook_views / crossposted_views work)
    shared_to_facebook_fraction: float = 0.3
    #: ⚠ reference conflict: some FEED media reject `views`; official docs say none do
    feed_views_rejected_fraction: float = 0.0
    #: Facebook Pages without a linked IG account listed by the user token's /me/accounts
    extra_pages: int = 1
    #: account indexes on the Instagram API with Instagram Login: no Facebook Page, an
    #: Instagram User token served by the instagram host only
    instagram_login: frozenset[int] = frozenset()
    #: account indexes whose Page token (handed out by /me/accounts) cannot read the account
    unreadable: frozenset[int] = frozenset()
    #: the time zone of account-insight day buckets: Pacific as our reference says, or an
    #: account's own zone as airbyte PR #74006 reports (docs/graph-api-notes.md §5)
    day_time_zone: str = "America/Los_Angeles"
    #: per-account-index override of ``day_time_zone``
    day_time_zones: Mapping[int, str] = dataclasses.field(default_factory=dict)
    #: a Meta app created after 2026-11-04: multi-ID ``?ids=``, field aliases (``.as()``) and
    #: asynchronous batch requests are refused (Graph API v27 announcement)
    new_app: bool = False
    app_id: str | None = None
    app_secret: str | None = None
    #: lifetime of every account token from world creation; None = never expires
    token_lifetime: timedelta | None = timedelta(days=60)
    #: per-account-index override of ``token_lifetime``
    token_lifetimes: Mapping[int, timedelta | None] = dataclasses.field(default_factory=dict)
    data_access_lifetime: timedelta = timedelta(days=90)
    # ---- rate limits
    account_budget: int = 4800
    account_window: timedelta = timedelta(hours=24)
    #: calls per app_window; None = unlimited
    app_budget: int | None = None
    app_window: timedelta = timedelta(hours=1)
    #: calls refused with 80002 still count (the real API extends a block when you insist)
    throttled_calls_count: bool = False
    #: extra budget calls charged per item whose insights are expanded in a list
    nested_insights_cost: int = 1
    #: send X-App-Usage on every response, not only on non-Instagram calls
    app_usage_on_all: bool = False
    # ---- behaviour choices where the reference is unsure
    expired_story_insights: Literal["empty", "error"] = "empty"
    story_min_value: int = 5
    #: None: any requested story metric below the minimum fails; else only this metric counts
    story_threshold_metric: str | None = None
    #: unknown API versions: "error" (2500 Unknown path components) or "oldest" (serve as v18.0)
    unknown_version: Literal["error", "oldest"] = "error"
    # ---- server behaviour
    latency: float = 0.0
    latency_jitter: float = 0.0
    fault_rates: Mapping[str, float] = dataclasses.field(default_factory=dict)
    slow_delay: float = 2.0
    hang_seconds: float = 600.0
    webhook_url: str | None = None
    #: real seconds between background webhook passes; None = only ``deliver_due()``
    webhook_poll_interval: float | None = 1.0
    #: simulated seconds to wait before each retry of a failed webhook delivery
    webhook_retry_delays: tuple[float, ...] = (0.0, 60.0, 300.0, 1800.0, 7200.0, 43200.0)
    #: value sent in webhooks for story metrics under the minimum (None = the real value)
    webhook_low_value: int | None = None
    #: keep at most this many request-log / served-value entries (None = unbounded)
    log_limit: int | None = 500_000

    def __post_init__(self) -> None:
        checks: list[tuple[str, float, float, float]] = [
            ("accounts", self.accounts, 1, MAX_ACCOUNTS),
            ("media_per_account", self.media_per_account, 0, MAX_MEDIA),
            ("stories_per_account", self.stories_per_account, 0, MAX_STORIES),
            ("account_budget", self.account_budget, 1, 10**12),
            ("nested_insights_cost", self.nested_insights_cost, 0, 1000),
            ("story_min_value", self.story_min_value, 0, 10**9),
        ]
        for name, value, low, high in checks:
            if not low <= value <= high:
                raise ValueError(f"{name}: must be between {low:g} and {high:g}, got {value}")
        for frac in (
            "low_follower_fraction",
            "converted_fraction",
            "quiet_story_fraction",
            "shared_to_facebook_fraction",
            "feed_views_rejected_fraction",
        ):
            value = getattr(self, frac)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{frac}: must be a fraction between 0 and 1, got {value}")
        if self.story_lifetime <= timedelta(0):
            raise ValueError(f"story_lifetime: must be positive, got {self.story_lifetime}")
        if self.account_window <= timedelta(0) or self.app_window <= timedelta(0):
            raise ValueError("account_window/app_window: must be positive")
        if self.app_budget is not None and self.app_budget < 1:
            raise ValueError(f"app_budget: must be at least 1, got {self.app_budget}")
        if self.stories_per_day is not None and self.stories_per_day < 0:
            raise ValueError(f"stories_per_day: must not be negative, got {self.stories_per_day}")
        if self.media_per_day < 0:
            raise ValueError(f"media_per_day: must not be negative, got {self.media_per_day}")
        if self.latency < 0 or self.latency_jitter < 0:
            raise ValueError("latency/latency_jitter: must not be negative")
        if self.extra_pages < 0:
            raise ValueError(f"extra_pages: must not be negative, got {self.extra_pages}")
        for zone in (self.day_time_zone, *self.day_time_zones.values()):
            ZoneInfo(zone)  # an unknown zone raises here, with its name


@dataclasses.dataclass(eq=False)
class Account:
    """A Facebook Page with its linked Instagram professional account and its token."""

    index: int
    ig_user_id: str
    page_id: str
    business_id: str
    user_id: str
    username: str
    name: str
    token: str
    token_state: TokenState
    token_issued_at: datetime
    token_expires_at: datetime | None
    data_access_expires_at: datetime
    followers_base: int
    follower_rate: float
    follows: int
    conversion_at: datetime | None
    gone: bool = False
    #: "facebook" or "instagram" (Instagram Login: no Page, served by the instagram host)
    login: str = "facebook"
    #: False: the Page token /me/accounts hands out cannot read this account
    readable: bool = True
    #: False: the Page no longer appears in /me/accounts (removed from the Business)
    page_listed: bool = True
    #: refresh_access_token refuses this account's token (a test's failure injection)
    refresh_fails: bool = False
    refreshes: int = 0
    #: every token refresh_access_token handed out for this account (tests look for leaks)
    issued_tokens: list[str] = dataclasses.field(default_factory=list)

    @property
    def low_followers(self) -> bool:
        """True when follower metrics are withheld (fewer than 100 followers at creation)."""
        return self.followers_base < 100


@dataclasses.dataclass(eq=False)
class Media:
    """An IG media object: a feed post, a reel or a story."""

    id: str
    ig_user_id: str
    media_type: str
    product_type: str
    posted: float
    expires: float | None
    caption: str | None
    shortcode: str
    has_media_url: bool
    shared_to_facebook: bool
    rejects_views: bool
    quiet: bool
    scale: float
    deleted: bool = False

    @property
    def is_story(self) -> bool:
        return self.product_type == "STORY"

    @property
    def posted_at(self) -> datetime:
        return datetime.fromtimestamp(self.posted, UTC)

    @property
    def expires_at(self) -> datetime | None:
        return None if self.expires is None else datetime.fromtimestamp(self.expires, UTC)

    def live(self, at: float) -> bool:
        """True while a story is listed by /stories (always True for feed media once posted)."""
        return self.posted <= at and (self.expires is None or at < self.expires)


# metric -> multiplier of the media's reach (feed/reels) used for its lifetime value
_FEED_RATIOS: dict[str, tuple[float, float]] = {
    "reach": (1.0, 0.0),
    "views": (1.3, 1.4),
    "likes": (0.03, 0.09),
    "comments": (0.004, 0.012),
    "saved": (0.005, 0.03),
    "shares": (0.003, 0.03),
    "reposts": (0.001, 0.01),
    "follows": (0.001, 0.01),
    "profile_visits": (0.01, 0.05),
    "profile_activity": (0.005, 0.02),
}
_STORY_RATIOS: dict[str, tuple[float, float]] = {
    "reach": (1.0, 0.0),
    "views": (1.1, 0.5),
    "replies": (0.02, 0.05),
    "shares": (0.01, 0.03),
    "reposts": (0.005, 0.01),
    "follows": (0.01, 0.02),
    "profile_visits": (0.02, 0.05),
    "profile_activity": (0.01, 0.03),
    "navigation": (0.8, 0.3),
    "link_clicks": (0.01, 0.03),
}
NAVIGATION_DIMS = ("tap_forward", "tap_back", "tap_exit", "swipe_forward")
ACTION_DIMS = ("bio_link_clicked", "call", "direction", "email", "other", "text")

# account metric -> (low, high) multiplier of followers for a full Pacific day
_ACCOUNT_RATIOS: dict[str, tuple[float, float]] = {
    "reach": (0.05, 0.25),
    "views": (0.15, 0.6),
    "impressions": (0.18, 0.7),
    "accounts_engaged": (0.004, 0.02),
    "likes": (0.005, 0.03),
    "comments": (0.0005, 0.004),
    "shares": (0.0005, 0.004),
    "saves": (0.0005, 0.004),
    "replies": (0.0002, 0.002),
    "reposts": (0.0001, 0.001),
    "profile_views": (0.003, 0.02),
    "website_clicks": (0.0005, 0.003),
    "profile_links_taps": (0.0005, 0.004),
    "email_contacts": (0.0001, 0.0005),
    "get_directions_clicks": (0.0001, 0.0005),
    "phone_call_clicks": (0.0001, 0.0005),
    "text_message_clicks": (0.0001, 0.0005),
    "unfollows": (0.0002, 0.001),
}
ACCOUNT_DIMENSIONS: dict[str, tuple[str, ...]] = {
    "media_product_type": ("AD", "FEED", "REELS", "STORY"),
    "follow_type": ("FOLLOWER", "NON_FOLLOWER"),
    "contact_button_type": (
        "BOOK_NOW",
        "CALL",
        "DIRECTION",
        "EMAIL",
        "INSTANT_EXPERIENCE",
        "TEXT",
        "UNDEFINED",
    ),
    "age": ("13-17", "18-24", "25-34", "35-44", "45-54", "55-64", "65+"),
    "gender": ("F", "M", "U"),
    "country": ("US", "BR", "GB", "DE", "FR", "IN", "MX", "IT", "ES", "CA", "JP", "AU"),
    "city": (
        "London, England",
        "New York, New York",
        "São Paulo, São Paulo (state)",
        "Los Angeles, California",
        "Berlin, Berlin",
        "Paris, Île-de-France",
        "Mexico City, Distrito Federal",
        "Madrid, Comunidad de Madrid",
        "Toronto, Ontario",
        "Sydney, New South Wales",
        "Mumbai, Maharashtra",
        "Tokyo, Tokyo",
    ),
}
TIMEFRAME_DAYS = {
    "this_week": 7,
    "this_month": 30,
    "last_14_days": 14,
    "last_30_days": 30,
    "last_90_days": 90,
    "prev_month": 30,
}
_MEDIA_KINDS = (
    ("IMAGE", "FEED", 0.40),
    ("CAROUSEL_ALBUM", "FEED", 0.25),
    ("VIDEO", "FEED", 0.10),
    ("VIDEO", "REELS", 0.25),
)


class World:
    """A generated world of N accounts and the ground truth of every value it serves."""

    def __init__(self, config: WorldConfig, clock: clock_mod.Clock) -> None:
        self.config = config
        self.clock = clock
        self.created_at = clock.now()
        self._t0 = self.created_at.timestamp()
        seed = config.seed
        self.seed = seed
        self.app_id = config.app_id or str(10**15 + digest(seed, "app") % (9 * 10**15))
        self.app_secret = config.app_secret
        self.app_name = "Insights Collector (simulated)"
        # Without a configured secret the app token still needs a secret-looking half.
        secret = config.app_secret or _chars(32, "0123456789abcdef", seed, "appsecret")
        self.app_token = f"{self.app_id}|{secret}"
        self.user_token = "EAAsimU" + _chars(57, _ALPHABET, seed, "usertoken")
        self.user_id = str(10**16 + digest(seed, "user") % (9 * 10**16))
        self.accounts: list[Account] = []
        self._by_ig: dict[str, Account] = {}
        self._by_page: dict[str, Account] = {}
        self._by_token: dict[str, Account] = {}
        self._media: dict[str, Media] = {}
        self._feed: dict[str, list[Media]] = {}
        self._feed_ts: dict[str, list[float]] = {}
        self._stories: dict[str, list[Media]] = {}
        self._stories_ts: dict[str, list[float]] = {}
        self._ids: set[str] = set()
        self.extra_page_ids = [
            self._unique_id(15, "1", "extrapage", i) for i in range(config.extra_pages)
        ]
        lifetime = config.story_lifetime.total_seconds()
        rate = config.stories_per_day
        if rate is None:
            rate = config.stories_per_account * DAY / lifetime
        self._story_slot = DAY / rate if rate > 0 else None
        self._media_slot = DAY / config.media_per_day if config.media_per_day > 0 else None
        self._story_slots_done: dict[str, int] = {}
        self._media_slots_done: dict[str, int] = {}
        self._manual = 0
        for i in range(config.accounts):
            self._make_account(i)

    # ------------------------------------------------------------------ generation

    def _unique_id(self, length: int, prefix: str, *parts: object) -> str:
        salt = 0
        while True:
            body = digest(self.seed, *parts, salt) % (10 ** (length - len(prefix)))
            candidate = prefix + str(body).zfill(length - len(prefix))
            if candidate not in self._ids:
                self._ids.add(candidate)
                return candidate
            salt += 1

    def _make_account(self, i: int) -> None:
        cfg = self.config
        seed = self.seed
        ig = self._unique_id(17, "178414", "ig", i)
        low = unit(seed, "low", i) < cfg.low_follower_fraction
        if low:
            followers = 20 + int(75 * unit(seed, "followers", i))
            rate = 0.002
        else:
            followers = int(150 * math.exp(unit(seed, "followers", i) * math.log(400)))
            rate = max(0.5, followers * 0.0005)
        lifetime = cfg.token_lifetimes.get(i, cfg.token_lifetime)
        issued = self.created_at - timedelta(days=1 + 20 * unit(seed, "issued", i))
        issued = issued.replace(microsecond=0)
        expires = None if lifetime is None else (self.created_at + lifetime).replace(microsecond=0)
        instagram = i in cfg.instagram_login
        acct = Account(
            index=i,
            ig_user_id=ig,
            page_id=self._unique_id(15, "1", "page", i),
            business_id=self._unique_id(15, "6", "business", i),
            user_id=self._unique_id(17, "10", "fbuser", i),
            username=f"sim_acct_{i + 1}",
            name=f"Simulated Account {i + 1}",
            # Instagram User tokens start with IG, Facebook ones with EAA
            token=("IGAAsim" if instagram else "EAAsim") + _chars(58, _ALPHABET, seed, "token", i),
            token_state="ok",  # noqa: S106 - a state name, not a secret
            token_issued_at=issued,
            token_expires_at=expires,
            data_access_expires_at=(self.created_at + cfg.data_access_lifetime).replace(
                microsecond=0
            ),
            followers_base=followers,
            follower_rate=rate,
            follows=10 + int(900 * unit(seed, "follows", i)),
            conversion_at=None,
            login="instagram" if instagram else "facebook",
            readable=i not in cfg.unreadable,
            page_listed=not instagram,
        )
        self.accounts.append(acct)
        self._by_ig[ig] = acct
        self._by_page[acct.page_id] = acct
        self._by_token[acct.token] = acct
        feed: list[Media] = []
        n = cfg.media_per_account
        for k in range(n):
            # Skewed towards recent posts so a fresh world has media still gaining reach.
            age = 3600 + 730 * DAY * unit(seed, "age", ig, k) ** 1.7
            feed.append(self._make_media(acct, ("feed", k), self._t0 - age, story=False))
        feed.sort(key=lambda m: m.posted)
        self._feed[ig] = feed
        self._feed_ts[ig] = [m.posted for m in feed]
        if feed and unit(seed, "converted", i) < cfg.converted_fraction:
            cut = max(1, int(len(feed) * (0.1 + 0.3 * unit(seed, "cut", i))))
            cut = min(cut, len(feed) - 1) if len(feed) > 1 else 1
            acct.conversion_at = datetime.fromtimestamp(feed[cut - 1].posted + 1, UTC)
        stories: list[Media] = []
        lifetime_s = cfg.story_lifetime.total_seconds()
        m = cfg.stories_per_account
        for k in range(m):
            offset = lifetime_s * (k + 0.1 + 0.8 * unit(seed, "story0", ig, k)) / m
            stories.append(self._make_media(acct, ("story0", k), self._t0 - offset, story=True))
        stories.sort(key=lambda s: s.posted)
        self._stories[ig] = stories
        self._stories_ts[ig] = [s.posted for s in stories]
        self._story_slots_done[ig] = 0
        self._media_slots_done[ig] = 0

    def _make_media(
        self, acct: Account, key: tuple[object, ...], posted: float, *, story: bool
    ) -> Media:
        seed = self.seed
        ig = acct.ig_user_id
        if story:
            media_type = "VIDEO" if unit(seed, "stype", ig, *key) < 0.4 else "IMAGE"
            product = "STORY"
            long_id = unit(seed, "idlen", ig, *key) < 0.5
            mid = (
                self._unique_id(18, "18", "media", ig, *key)
                if long_id
                else self._unique_id(17, "179", "media", ig, *key)
            )
        else:
            r = unit(seed, "kind", ig, *key)
            media_type, product = _MEDIA_KINDS[-1][0], _MEDIA_KINDS[-1][1]
            acc = 0.0
            for mt, pt, share in _MEDIA_KINDS:
                acc += share
                if r < acc:
                    media_type, product = mt, pt
                    break
            long_id = unit(seed, "idlen", ig, *key) < 0.5
            mid = (
                self._unique_id(18, "18", "media", ig, *key)
                if long_id
                else self._unique_id(17, "179", "media", ig, *key)
            )
        cfg = self.config
        followers = max(acct.followers_base, 20)
        if story:
            quiet = unit(seed, "quiet", mid) < cfg.quiet_story_fraction
            scale = (
                1 + 3 * unit(seed, "scale", mid)
                if quiet
                else 300 + followers * 0.1 * (0.5 + unit(seed, "scale", mid))
            )
        else:
            quiet = False
            factor = 3.0 if product == "REELS" else 1.0
            scale = followers * factor * (0.1 + 0.5 * unit(seed, "scale", mid))
        caption = None
        if unit(seed, "caption", mid) < 0.85 and not story:
            caption = f"Simulated post {mid[-4:]} #sim"
        media = Media(
            id=mid,
            ig_user_id=ig,
            media_type=media_type,
            product_type=product,
            posted=float(int(posted)),
            expires=float(int(posted)) + cfg.story_lifetime.total_seconds() if story else None,
            caption=caption,
            shortcode=_chars(11, _SHORTCODE_ALPHABET, seed, "shortcode", mid),
            has_media_url=unit(seed, "flagged", mid) >= 0.02,
            shared_to_facebook=unit(seed, "fb", mid) < cfg.shared_to_facebook_fraction,
            rejects_views=(
                product == "FEED" and unit(seed, "noviews", mid) < cfg.feed_views_rejected_fraction
            ),
            quiet=quiet,
            scale=scale,
        )
        self._media[mid] = media
        return media

    def _extend(self, at: float) -> None:
        """Materialise the stories and media whose time slot has started by ``at``."""
        for acct in self.accounts:
            ig = acct.ig_user_id
            if self._story_slot is not None:
                slot = self._story_slot
                k = self._story_slots_done[ig]
                while self._t0 + k * slot <= at:
                    posted = self._t0 + (k + unit(self.seed, "slot", ig, k)) * slot
                    story = self._make_media(acct, ("slot", k), posted, story=True)
                    self._insert(self._stories[ig], self._stories_ts[ig], story)
                    k += 1
                self._story_slots_done[ig] = k
            if self._media_slot is not None:
                slot = self._media_slot
                k = self._media_slots_done[ig]
                while self._t0 + k * slot <= at:
                    posted = self._t0 + (k + unit(self.seed, "mslot", ig, k)) * slot
                    media = self._make_media(acct, ("mslot", k), posted, story=False)
                    self._insert(self._feed[ig], self._feed_ts[ig], media)
                    k += 1
                self._media_slots_done[ig] = k

    @staticmethod
    def _insert(items: list[Media], stamps: list[float], media: Media) -> None:
        pos = bisect.bisect_right(stamps, media.posted)
        stamps.insert(pos, media.posted)
        items.insert(pos, media)

    # ------------------------------------------------------------------ lookups

    def now(self) -> datetime:
        return self.clock.now()

    def account(self, ig_user_id: str) -> Account:
        """The account with this IG user id (KeyError when unknown)."""
        return self._by_ig[ig_user_id]

    def day_zone(self, ig_user_id: str) -> ZoneInfo:
        """The time zone the account's insight days are cut in."""
        index = self._by_ig[ig_user_id].index
        return ZoneInfo(self.config.day_time_zones.get(index, self.config.day_time_zone))

    def account_by_page(self, page_id: str) -> Account | None:
        return self._by_page.get(page_id)

    def account_by_token(self, token: str) -> Account | None:
        return self._by_token.get(token)

    def media(self, media_id: str) -> Media | None:
        """Any media or story ever generated (deleted ones included), or None."""
        self._extend(self.clock.now().timestamp())
        return self._media.get(media_id)

    def media_of(self, ig_user_id: str, at: datetime | None = None) -> list[Media]:
        """Feed media and reels visible at ``at`` (default now), newest first, as /media lists."""
        ts = (at or self.clock.now()).timestamp()
        self._extend(ts)
        items = self._feed[ig_user_id]
        end = bisect.bisect_right(self._feed_ts[ig_user_id], ts)
        out = [m for m in reversed(items[:end]) if not m.deleted]
        return out[:MAX_MEDIA]

    def stories_of(self, ig_user_id: str, at: datetime | None = None) -> list[Media]:
        """Stories live at ``at`` (default now), newest first, as /stories lists them."""
        ts = (at or self.clock.now()).timestamp()
        self._extend(ts)
        stamps = self._stories_ts[ig_user_id]
        lifetime = self.config.story_lifetime.total_seconds()
        lo = bisect.bisect_right(stamps, ts - lifetime)
        hi = bisect.bisect_right(stamps, ts)
        items = self._stories[ig_user_id][lo:hi]
        return [s for s in reversed(items) if not s.deleted and s.live(ts)]

    def stories_between(self, start: datetime, end: datetime) -> list[Media]:
        """Every story that was live at some instant in [start, end), oldest first."""
        s, e = start.timestamp(), end.timestamp()
        self._extend(e)
        out: list[Media] = []
        for acct in self.accounts:
            for story in self._stories[acct.ig_user_id]:
                if story.expires is not None and story.posted < e and story.expires > s:
                    out.append(story)
        out.sort(key=lambda st: (st.posted, st.id))
        return out

    def stories_expiring(self, after: float, until: float) -> list[Media]:
        """Stories whose expiry lies in (after, until] (epoch seconds), oldest expiry first."""
        self._extend(until)
        lifetime = self.config.story_lifetime.total_seconds()
        out: list[Media] = []
        for acct in self.accounts:
            stamps = self._stories_ts[acct.ig_user_id]
            lo = bisect.bisect_right(stamps, after - lifetime)
            hi = bisect.bisect_right(stamps, until - lifetime)
            out.extend(self._stories[acct.ig_user_id][lo:hi])
        out.sort(key=lambda st: (st.expires or 0.0, st.id))
        return out

    @property
    def signing_secret(self) -> str:
        """The app secret (configured or generated) that signs webhooks."""
        return self.app_token.split("|", 1)[1]

    def expired_stories(self, until: datetime) -> list[Media]:
        """Stories whose expiry is at or before ``until``, oldest expiry first."""
        ts = until.timestamp()
        self._extend(ts)
        out = [
            st
            for acct in self.accounts
            for st in self._stories[acct.ig_user_id]
            if st.expires is not None and st.expires <= ts
        ]
        out.sort(key=lambda st: (st.expires or 0.0, st.id))
        return out

    # ------------------------------------------------------------------ mutators (tests)

    def set_token_state(self, ig_user_id: str, state: TokenState) -> None:
        """Put an account's token in one of ``TOKEN_STATES``."""
        if state not in TOKEN_STATES:
            raise ValueError(f"token state must be one of {', '.join(TOKEN_STATES)}, got {state!r}")
        self._by_ig[ig_user_id].token_state = state

    def set_token_expiry(self, ig_user_id: str, when: datetime | None) -> None:
        """Set when an account's token expires (None = never)."""
        self._by_ig[ig_user_id].token_expires_at = when

    def set_conversion(self, ig_user_id: str, when: datetime | None) -> None:
        """Media posted before ``when`` answer insights with 100/2108006."""
        self._by_ig[ig_user_id].conversion_at = when

    def delete_media(self, media_id: str) -> None:
        """The media disappears from lists and answers 100/33."""
        self._media[media_id].deleted = True

    def remove_account(self, ig_user_id: str) -> None:
        """The IG account is unlinked/deleted: its objects answer 100/33."""
        self._by_ig[ig_user_id].gone = True

    def remove_page(self, ig_user_id: str) -> None:
        """The account's Page leaves the token's Pages: /me/accounts no longer lists it."""
        self._by_ig[ig_user_id].page_listed = False

    def set_refresh_fails(self, ig_user_id: str, fails: bool = True) -> None:
        """refresh_access_token refuses (or accepts again) this account's token."""
        self._by_ig[ig_user_id].refresh_fails = fails

    def refresh_token(self, token: str, now: datetime) -> tuple[str, int]:
        """``refresh_access_token``: a new 60-day token for an Instagram Login token at least
        24 h old and not expired; the old token stops working. Raises ValueError (why)."""
        acct = self._by_token.get(token)
        if acct is None or acct.login != "instagram":
            raise ValueError("not an Instagram User access token")
        expires = acct.token_expires_at
        if acct.token_state == "expired" or (  # noqa: S105 - a state name, not a secret
            expires is not None and now >= expires
        ):
            raise ValueError("expired")
        if now - acct.token_issued_at < timedelta(hours=24):
            raise ValueError("too young")
        if acct.refresh_fails:
            raise ValueError("refused")
        acct.refreshes += 1
        fresh = "IGAAsim" + _chars(
            58, _ALPHABET, self.seed, "refreshed", acct.index, acct.refreshes
        )
        del self._by_token[token]
        acct.issued_tokens.append(fresh)
        acct.token = fresh
        self._by_token[fresh] = acct
        acct.token_issued_at = now.replace(microsecond=0)
        acct.token_expires_at = (now + INSTAGRAM_TOKEN_LIFETIME).replace(microsecond=0)
        return fresh, int(INSTAGRAM_TOKEN_LIFETIME.total_seconds())

    def post_story(
        self, ig_user_id: str, at: datetime | None = None, *, quiet: bool = False
    ) -> Media:
        """Post an extra story now (or at ``at``)."""
        acct = self._by_ig[ig_user_id]
        self._manual += 1
        posted = (at or self.clock.now()).timestamp()
        story = self._make_media(acct, ("manual", self._manual), posted, story=True)
        if quiet:
            story.quiet = True
            story.scale = 2.0
        self._insert(self._stories[ig_user_id], self._stories_ts[ig_user_id], story)
        return story

    # ------------------------------------------------------------------ ground truth: fields

    def followers_count(self, ig_user_id: str, at: datetime | float) -> int:
        """``followers_count`` at a time (non-decreasing in time)."""
        acct = self._by_ig[ig_user_id]
        ts = at if isinstance(at, float | int) else at.timestamp()
        return acct.followers_base + self._follower_gain(acct, ts)

    def _follower_gain(self, acct: Account, ts: float) -> int:
        h = (ts - self._t0) / HOUR
        # A weekly wobble keeps daily follower_count values varied; the slope stays positive.
        period = 168.0
        wobble = 0.5 * period / (2 * math.pi) * math.sin(2 * math.pi * h / period)
        return math.floor(acct.follower_rate * (h + wobble))

    def media_count(self, ig_user_id: str, at: datetime | None = None) -> int:
        return len(self.media_of(ig_user_id, at))

    def like_count(self, media: Media, at: float) -> int:
        return int(self.media_metric(media.id, "likes", at) or 0)

    def comments_count(self, media: Media, at: float) -> int:
        return int(self.media_metric(media.id, "comments", at) or 0)

    # ---------------------------------------------------------- ground truth: media insights

    def _growth(self, media: Media, ts: float) -> float:
        end = ts if media.expires is None else min(ts, media.expires)
        age_h = (end - media.posted) / HOUR
        if age_h <= 0:
            return 0.0
        if media.is_story:
            # a twelfth of the story's life as time constant (2 h for Meta's 24 h), so stories
            # of a short-lived test world mature the same way within their shorter life
            tau_h = self.config.story_lifetime.total_seconds() / HOUR / 12.0
            return 1.0 - math.exp(-age_h / tau_h)
        tau = 48.0 if media.product_type == "REELS" else 24.0
        return (1.0 - math.exp(-age_h / tau)) + 0.1 * math.log1p(age_h / 24.0)

    @functools.lru_cache(maxsize=262144)  # noqa: B019 - the world lives as long as its caches
    def _base(self, media_id: str, metric: str) -> float:
        media = self._media[media_id]
        ratios = _STORY_RATIOS if media.is_story else _FEED_RATIOS
        low, spread = ratios.get(metric, (0.01, 0.02))
        base = media.scale * (low + spread * unit(self.seed, "ratio", media_id, metric))
        if media.is_story and not media.quiet:
            # Mature stories clear the 5-viewer threshold on every metric.
            base = max(base, 8.0 + 12.0 * unit(self.seed, "floor", media_id, metric))
        if media.is_story and media.quiet:
            base = min(base, media.scale)
        return base

    def media_metric(self, media_id: str, metric: str, at: datetime | float) -> int | float | None:
        """Value of a media insight at a time (None if the metric doesn't exist for it)."""
        media = self._media[media_id]
        ts = at if isinstance(at, float | int) else at.timestamp()
        seed = self.seed
        g = self._growth(media, ts)
        if metric == "total_interactions":
            parts = (
                ("replies", "shares")
                if media.is_story
                else ("likes", "comments", "saved", "shares")
            )
            return sum(math.floor(self._base(media_id, p) * g) for p in parts)
        if metric == "ig_reels_avg_watch_time":
            return 2500 + int(12000 * unit(seed, "watch", media_id))
        if metric == "reels_skip_rate":
            return round(15.0 + 55.0 * unit(seed, "skip", media_id), 1)
        if metric == "ig_reels_video_view_total_time":
            views = math.floor(self._base(media_id, "views") * g)
            return views * (2500 + int(12000 * unit(seed, "watch", media_id)))
        if metric in ("plays", "video_views"):
            return math.floor(self._base(media_id, "views") * g)
        if metric == "ig_reels_aggregated_all_plays_count":
            return math.floor(self._base(media_id, "views") * g * 1.1)
        if metric == "clips_replays_count":
            return math.floor(self._base(media_id, "views") * g * 0.1)
        if metric == "impressions":
            return math.floor(self._base(media_id, "views") * g * 1.05)
        if metric in ("facebook_views", "crossposted_views"):
            return math.floor(self._base(media_id, "views") * g * 0.2)
        if metric in ("total_views", "total_likes", "total_comments"):
            organic = metric.removeprefix("total_")
            value = math.floor(self._base(media_id, organic) * g)
            return value + math.floor(value * 0.3 * unit(seed, "boost", media_id, metric))
        return math.floor(self._base(media_id, metric) * g)

    def media_breakdown(self, media_id: str, metric: str, at: datetime | float) -> dict[str, int]:
        """Per-dimension values of ``navigation`` / ``profile_activity`` (they sum to the total)."""
        total = int(self.media_metric(media_id, metric, at) or 0)
        dims = NAVIGATION_DIMS if metric == "navigation" else ACTION_DIMS
        if metric == "navigation":
            weights = [
                0.6 + 0.2 * unit(self.seed, "nav", media_id, 0),
                0.1 + 0.1 * unit(self.seed, "nav", media_id, 1),
                0.05 + 0.1 * unit(self.seed, "nav", media_id, 2),
                0.05 + 0.1 * unit(self.seed, "nav", media_id, 3),
            ]
        else:
            weights = [0.05 + unit(self.seed, "act", media_id, d) for d in dims]
        return dict(zip(dims, split(total, weights), strict=True))

    # ---------------------------------------------------------- ground truth: account insights

    @functools.lru_cache(maxsize=262144)  # noqa: B019 - the world lives as long as its caches
    def _day_full(self, ig_user_id: str, metric: str, day: date) -> int:
        acct = self._by_ig[ig_user_id]
        seed = self.seed
        if metric == "total_interactions":
            return sum(
                self._day_full(ig_user_id, m, day)
                for m in ("likes", "comments", "shares", "saves", "replies")
            )
        low, spread = _ACCOUNT_RATIOS.get(metric, (0.001, 0.005))
        level = low + spread * unit(seed, "acct_ratio", ig_user_id, metric)
        daily = 0.6 + 0.8 * unit(seed, "day", ig_user_id, metric, day.toordinal())
        return math.floor(max(acct.followers_base, 20) * level * daily + 0.5)

    def account_day_value(
        self, ig_user_id: str, metric: str, day: date, at: datetime | float
    ) -> int:
        """Value of an account metric for one day (in the account's day zone) as known at
        ``at`` (partial today)."""
        ts = at if isinstance(at, float | int) else at.timestamp()
        start, end = day_bounds(day, self.day_zone(ig_user_id))
        if ts <= start:
            return 0
        if metric == "follower_count":
            return self.followers_count(ig_user_id, min(end, ts)) - self.followers_count(
                ig_user_id, start
            )
        full = self._day_full(ig_user_id, metric, day)
        if ts >= end:
            return full
        return math.floor(full * (ts - start) / (end - start))

    def account_total(
        self, ig_user_id: str, metric: str, since: float, until: float, at: datetime | float
    ) -> int:
        """Total of an account metric over [since, until) as known at ``at``."""
        ts = at if isinstance(at, float | int) else at.timestamp()
        stop = min(until, ts)
        if stop <= since:
            return 0
        if metric in ("follows_and_unfollows", "follower_count"):
            return self.followers_count(ig_user_id, stop) - self.followers_count(ig_user_id, since)
        total = 0.0
        zone = self.day_zone(ig_user_id)
        day = local_day(since, zone)
        while True:
            start, end = day_bounds(day, zone)
            if start >= stop:
                break
            overlap = min(end, stop) - max(start, since)
            if overlap > 0:
                total += self._day_full(ig_user_id, metric, day) * overlap / (end - start)
            day += timedelta(days=1)
        return math.floor(total)

    def account_breakdown(
        self,
        ig_user_id: str,
        metric: str,
        breakdown: str,
        since: float,
        until: float,
        at: datetime | float,
    ) -> dict[str, int]:
        """Per-dimension split of an account total (values sum to ``account_total``)."""
        if metric == "follows_and_unfollows":
            ts = at if isinstance(at, float | int) else at.timestamp()
            net = self.account_total(ig_user_id, metric, since, until, ts)
            unfollows = self.account_total(ig_user_id, "unfollows", since, until, ts)
            return {"FOLLOWER": net + unfollows, "NON_FOLLOWER": unfollows}
        total = self.account_total(ig_user_id, metric, since, until, at)
        dims = ACCOUNT_DIMENSIONS[breakdown]
        weights = [0.05 + unit(self.seed, "w", ig_user_id, metric, breakdown, d) for d in dims]
        return dict(zip(dims, split(total, weights), strict=True))

    def demographics(
        self,
        ig_user_id: str,
        metric: str,
        breakdowns: Sequence[str],
        timeframe: str,
        at: datetime | float,
    ) -> dict[tuple[str, ...], int]:
        """Demographic rows (top 45 by value) for one or several breakdowns."""
        ts = at if isinstance(at, float | int) else at.timestamp()
        if metric == "follower_demographics":
            total = self.followers_count(ig_user_id, ts)
        else:
            days = TIMEFRAME_DAYS.get(timeframe, 30)
            source = "accounts_engaged" if metric == "engaged_audience_demographics" else "reach"
            total = self.account_total(ig_user_id, source, ts - days * DAY, ts, ts)
        rows: dict[tuple[str, ...], float] = {(): 1.0}
        for bd in breakdowns:
            dims = ACCOUNT_DIMENSIONS[bd]
            weights = [(0.02 + unit(self.seed, "demo", ig_user_id, bd, d)) ** 2 for d in dims]
            wsum = sum(weights)
            rows = {
                (*key, d): share * w / wsum
                for key, share in rows.items()
                for d, w in zip(dims, weights, strict=True)
            }
        keys = list(rows)
        values = split(total, [rows[k] for k in keys])
        ranked = sorted(
            ((k, v) for k, v in zip(keys, values, strict=True) if v > 0),
            key=lambda kv: (-kv[1], kv[0]),
        )
        return dict(ranked[:45])

    def online_followers(self, ig_user_id: str, day: date) -> dict[str, int]:
        """Followers online per hour (Pacific) on a day."""
        _, end = pacific_day_bounds(day)
        followers = self.followers_count(ig_user_id, end)
        out: dict[str, int] = {}
        for hour in range(24):
            diurnal = 0.5 + 0.5 * math.sin(math.pi * (hour - 6) / 12)
            jitter = 0.9 + 0.2 * unit(self.seed, "online", ig_user_id, day.toordinal(), hour)
            out[str(hour)] = int(followers * (0.05 + 0.25 * diurnal) * jitter)
        return out
