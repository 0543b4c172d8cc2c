"""Request dispatch: routes, tokens, budgets, nodes, edges, insights and batches.

Transport-free: a ``Call`` goes in, a ``Reply`` comes out, so HTTP requests and the operations
of a batch request take exactly the same path.
"""

from __future__ import annotations

import base64
import binascii
import bisect
import dataclasses
import hashlib
import hmac
import json
import urllib.parse
from collections.abc import Callable
from datetime import datetime
from typing import Any

from collector.simulator import (
    apierror,
    budget,
    faults,
    fields,
    insights,
    metrics,
    stats,
    world,
)

MAX_BATCH = 50
_CDN = "https://scontent.cdninstagram.com/sim"
#: IG Media count fields -> the media metric they report
_MEDIA_COUNTS = {
    "like_count": "likes",
    "comments_count": "comments",
    "total_like_count": "total_likes",
    "total_comments_count": "total_comments",
    "total_views_count": "total_views",
    "saved_count": "saved",
    "shares_count": "shares",
    "reposts_count": "reposts",
}
_FEED_ONLY_COUNTS = frozenset(
    ("like_count", "comments_count", "total_like_count", "total_comments_count", "saved_count")
)
#: known IG Media fields without a simulated value: absent, as Meta omits them
_ABSENT_MEDIA_FIELDS = frozenset(
    (
        "alt_text",
        "boost_eligibility_info",
        "copyright_check_information",
        "current_live_viewer_count",
        "has_poll",
        "has_slider",
        "media_audio_type",
        "video_title",
        "children",
    )
)
MAX_LIMIT = 500
JSON_TYPE = "application/json; charset=UTF-8"


@dataclasses.dataclass
class Call:
    """One Graph API operation (an HTTP request or one entry of a batch)."""

    method: str
    version: str
    path: str
    params: dict[str, str]
    token: str | None
    base_url: str
    in_batch: bool = False
    #: which host was called: "facebook" (Facebook Login) or "instagram" (Instagram Login)
    host: str = "facebook"


@dataclasses.dataclass
class Reply:
    """The answer to a ``Call``."""

    status: int
    body: Any
    headers: dict[str, str]
    kind: str
    account: str | None
    error: str | None


@dataclasses.dataclass
class _Ctx:
    call: Call
    now: datetime
    ts: float
    version: str = metrics.VERSIONS[-1]
    vnum: int = 25
    kind: str = "unknown"
    account: world.Account | None = None
    token_account: world.Account | None = None
    caller: str = "none"
    app_usage: bool = False
    headers: dict[str, str] = dataclasses.field(default_factory=dict)
    served: insights.Served = dataclasses.field(init=False)

    def __post_init__(self) -> None:
        self.served = insights.Served(self.now)


def encode_cursor(object_id: str) -> str:
    return base64.urlsafe_b64encode(f"AQH{object_id}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> str:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise apierror.invalid_param("The cursor is not valid") from None
    if not raw.startswith("AQH"):
        raise apierror.invalid_param("The cursor is not valid")
    return raw[3:]


def appsecret_proof(secret: str, token: str) -> str:
    """hex(HMAC-SHA256(key=app_secret, msg=access_token))."""
    return hmac.new(secret.encode(), token.encode(), hashlib.sha256).hexdigest()


def fault_error(kind: str) -> apierror.ApiError:
    """The Graph error a scripted/random error fault answers with."""
    if kind == "http500":
        return apierror.unknown_error()
    if kind == "reduce_data":
        return apierror.reduce_data()
    if kind == "code2":
        return apierror.service_unavailable()
    if kind == "http503":
        err = apierror.service_unavailable()
        err.status = 503
        return err
    if kind == "code4":
        return apierror.app_throttled()
    if kind == "code17":
        return apierror.ApiError("(#17) User request limit reached", code=17, is_transient=True)
    if kind == "code32":
        return apierror.ApiError("(#32) Page request limit reached", code=32, is_transient=True)
    if kind == "code613":
        return apierror.ApiError(
            "(#613) Calls to this api have exceeded the rate limit.", code=613, is_transient=True
        )
    if kind == "code368":
        return apierror.ApiError(
            "(#368) The action attempted has been deemed abusive or is otherwise disallowed",
            code=368,
            is_transient=True,
        )
    if kind == "code190":
        return apierror.bad_token()
    raise ValueError(f"{kind} is not an error fault")


class Graph:
    """The simulated Graph API."""

    def __init__(
        self,
        w: world.World,
        st: stats.Stats,
        budgets: budget.Budgets,
        flt: faults.Faults,
    ) -> None:
        self.world = w
        self.stats = st
        self.budgets = budgets
        self.faults = flt
        self.config = w.config
        self._trace = 0

    # ------------------------------------------------------------------ entry points

    def trace_id(self) -> str:
        """A deterministic, real-looking ``fbtrace_id``."""
        self._trace += 1
        raw = hashlib.blake2b(f"{self.world.seed}:{self._trace}".encode(), digest_size=16)
        return "A" + base64.urlsafe_b64encode(raw.digest()).decode()[:22]

    def handle(
        self,
        call: Call,
        *,
        commit: bool = True,
        fault: str | None = None,
        label: str | None = None,
    ) -> Reply:
        """Answer one operation.

        ``fault`` answers with that error fault instead; ``commit=False`` keeps the values out
        of the served log (the client never gets them); ``label`` names a transport fault in
        the request log.
        """
        now = self.world.clock.now()
        ctx = _Ctx(call=call, now=now, ts=now.timestamp())
        trace = self.trace_id()
        error: apierror.ApiError | None = None
        try:
            if fault is not None:
                ctx.kind = "fault"
                raise fault_error(fault)
            body: Any = self._route(ctx)
            status = 200
        except apierror.ApiError as err:
            error = err
            body = err.body(trace)
            status = err.status
            ctx.headers.update(err.headers)
        headers = ctx.headers
        if ctx.account is not None:
            headers["X-Business-Use-Case-Usage"] = self.budgets.buc_header(ctx.account, ctx.ts)
        if ctx.app_usage or self.config.app_usage_on_all or ctx.account is None:
            headers["X-App-Usage"] = self.budgets.app_header(ctx.ts)
        headers["x-fb-trace-id"] = trace
        account_id = ctx.account.ig_user_id if ctx.account is not None else None
        self.stats.record(
            stats.RequestRecord(
                at=now,
                method=call.method,
                path=_record_path(call),
                kind=ctx.kind,
                account=account_id,
                status=status,
                error=None if error is None else error.error_class,
                fault=fault or label,
                in_batch=call.in_batch,
                host=call.host,
                params=tuple(
                    (k, v)
                    for k, v in sorted(call.params.items())
                    if k not in ("access_token", "appsecret_proof")
                ),
            )
        )
        if commit and error is None:
            self.stats.serve(ctx.served.values)
        return Reply(
            status=status,
            body=body,
            headers=headers,
            kind=ctx.kind,
            account=account_id,
            error=None if error is None else error.error_class,
        )

    def record_transport_fault(self, call: Call, kind: str, status: int) -> None:
        """Log a request that a transport fault answered (nothing was served)."""
        self.stats.record(
            stats.RequestRecord(
                at=self.world.clock.now(),
                method=call.method,
                path=_record_path(call),
                kind="fault",
                account=None,
                status=status,
                error=None,
                fault=kind,
                in_batch=call.in_batch,
                host=call.host,
            )
        )

    # ------------------------------------------------------------------ routing

    def _route(self, ctx: _Ctx) -> Any:
        call = ctx.call
        instagram = call.host == "instagram"
        if instagram and "refresh_access_token" in (call.version, call.path.strip("/")):
            # documented unversioned (graph.instagram.com/refresh_access_token); both answer
            ctx.kind = "refresh_access_token"
            return self._refresh(ctx)
        if self.config.new_app:
            _refuse_legacy(call)
        vnum = metrics.version_number(call.version)
        if call.version in metrics.VERSIONS and vnum is not None:
            ctx.version, ctx.vnum = call.version, vnum
        elif (vnum is not None and vnum < 18) or (
            vnum is not None and self.config.unknown_version == "oldest"
        ):
            # Expired versions are served by the oldest available one, as Meta does.
            ctx.version, ctx.vnum = metrics.OLDEST, 18
        else:
            raise apierror.unknown_path(f"/{call.version}/{call.path}".rstrip("/"))
        parts = [p for p in call.path.split("/") if p]
        if instagram and (not parts or parts == ["debug_token"] or parts[:2] == ["me", "accounts"]):
            # no batch endpoint, debug_token or Page listing on the instagram host (notes §2)
            raise apierror.unknown_path(f"/{call.version}/{call.path}".rstrip("/"))
        if not parts:
            if call.method == "POST" and not call.in_batch:
                ctx.kind = "batch"
                return self._batch(ctx)
            if "ids" in call.params:
                ctx.kind = "multi_ids"
                return self._multi_ids(ctx)
            raise apierror.unknown_path(f"/{call.version}/")
        if call.method != "GET":
            raise apierror.object_missing(parts[0], call.method.lower())
        if parts == ["debug_token"]:
            ctx.kind = "debug_token"
            return self._debug_token(ctx)
        if parts[0] == "me":
            return self._me(ctx, parts[1:])
        if len(parts) > 2:
            raise apierror.unknown_path("/" + "/".join(parts[2:]))
        edge = parts[1] if len(parts) == 2 else None
        return self._object(ctx, parts[0], edge)

    # ------------------------------------------------------------------ auth and budgets

    def _auth(self, ctx: _Ctx, *, allow_app: bool = False) -> None:
        token = ctx.call.token
        if not token:
            raise apierror.no_token()
        w = self.world
        if token == w.app_token:
            if not allow_app:
                raise apierror.ApiError(
                    "(#200) Requires a user or page access token for this action", code=200
                )
            ctx.caller = "app"
        else:
            acct = w.account_by_token(token)
            if acct is None and token != w.user_token:
                raise apierror.bad_token()
            # an Instagram User token works on the instagram host only, a Facebook one not there
            host = "instagram" if acct is not None and acct.login == "instagram" else "facebook"
            if host != ctx.call.host:
                raise apierror.bad_token()
            if w.app_secret is not None:
                proof = ctx.call.params.get("appsecret_proof")
                if not proof:
                    raise apierror.proof_missing()
                if not hmac.compare_digest(proof, appsecret_proof(w.app_secret, token)):
                    raise apierror.proof_invalid()
            if acct is not None:
                self._check_token_state(acct, ctx.now)
                ctx.caller = "account"
                ctx.token_account = acct
            else:
                ctx.caller = "user"
        if not self.budgets.charge_app(ctx.ts):
            ctx.app_usage = True
            raise apierror.app_throttled()

    @staticmethod
    def _check_token_state(acct: world.Account, now: datetime) -> None:
        state = acct.token_state
        expires = acct.token_expires_at
        if state == "expired" or (expires is not None and now >= expires):
            when = expires if expires is not None and expires <= now else now
            raise apierror.token_expired(when, now)
        if state == "invalid":
            raise apierror.bad_token()
        if state == "password_changed":
            raise apierror.password_changed()
        if state == "logged_out":
            raise apierror.logged_out()

    def _charge(self, ctx: _Ctx, acct: world.Account, cost: int = 1) -> None:
        """Count calls against the account's Instagram BUC budget (80002 when exhausted)."""
        ctx.account = acct
        counter = self.budgets.account(acct.ig_user_id)
        if counter.blocked(ctx.ts):
            if self.config.throttled_calls_count:
                counter.add(ctx.ts, cost)
            raise apierror.account_throttled({})
        counter.add(ctx.ts, cost)

    def _may_see(self, ctx: _Ctx, acct: world.Account) -> bool:
        return ctx.caller == "user" or ctx.token_account is acct

    @staticmethod
    def _need_read_permission(ctx: _Ctx, acct: world.Account) -> None:
        """A Page token without the role or task that reading its Instagram account needs."""
        if not acct.readable and ctx.token_account is acct:
            raise apierror.no_permission()

    def _need_insights_permission(self, ctx: _Ctx) -> None:
        acct = ctx.token_account
        if acct is not None and _no_permission(acct):
            raise apierror.no_permission()

    # ------------------------------------------------------------------ /me

    def _me(self, ctx: _Ctx, rest: list[str]) -> Any:
        self._auth(ctx)
        ctx.app_usage = True
        if not rest and ctx.call.host == "instagram" and ctx.token_account is not None:
            # Instagram Login: /me is the token's professional account (an IG User node)
            ctx.kind = "me"
            owner = ctx.token_account
            if owner.gone:
                raise apierror.object_missing("me")
            self._charge(ctx, owner)
            return self._user_json(ctx, owner, self._parse(ctx, "id,username"))
        if not rest:
            ctx.kind = "me"
            acct = ctx.token_account
            user_id = acct.user_id if acct is not None else self.world.user_id
            name = f"Sim User {acct.index + 1}" if acct is not None else "Sim System User"
            return self._select(
                self._parse(ctx, "id,name"),
                {"id": lambda: user_id, "name": lambda: name},
                "User",
            )
        if rest != ["accounts"]:
            raise apierror.unknown_path("/" + "/".join(rest))
        ctx.kind = "me_accounts"
        acct = ctx.token_account
        pages: list[tuple[str, world.Account | None]]
        if acct is not None:
            pages = [(acct.page_id, acct)] if acct.page_listed else []
        else:
            pages = [(a.page_id, a) for a in self.world.accounts if a.page_listed]
            pages += [(pid, None) for pid in self.world.extra_page_ids]
        wanted = self._parse(ctx, "access_token,category,name,id,tasks")
        page_ids = [pid for pid, _ in pages]
        by_id = dict(pages)
        chosen, has_prev, has_next = self._slice(
            ctx, page_ids, lambda pid: (page_ids.index(pid), True)
        )
        data = [self._page_json(ctx, pid, by_id[pid], wanted) for pid in chosen]
        return self._listing(ctx, data, chosen, has_prev, has_next)

    def _page_json(
        self, ctx: _Ctx, page_id: str, acct: world.Account | None, wanted: list[fields.Field]
    ) -> dict[str, Any]:
        name = acct.name if acct is not None else f"Sim Page {page_id[-4:]} (no Instagram)"
        token = acct.token if acct is not None else self.world.user_token

        def ig_account(spec: fields.Field) -> Any:
            if acct is None or acct.gone:
                return None
            if spec.children is None:
                return {"id": acct.ig_user_id}
            return self._user_json(ctx, acct, spec.children)

        getters: dict[str, Callable[[], Any]] = {
            "id": lambda: page_id,
            "name": lambda: name,
            "access_token": lambda: token,
            "category": lambda: "Personal blog",
            "category_list": lambda: [{"id": "2700", "name": "Personal blog"}],
            "tasks": lambda: [
                "ANALYZE",
                "ADVERTISE",
                "MESSAGING",
                "MODERATE",
                "CREATE_CONTENT",
                "MANAGE",
            ],
        }
        out: dict[str, Any] = {}
        for spec in wanted:
            if spec.name == "instagram_business_account":
                value = ig_account(spec)
            elif spec.name in getters:
                value = getters[spec.name]()
            else:
                raise apierror.nonexisting_field(spec.name, "Page")
            if value is not None:
                out[spec.name] = value
        # Graph nodes always carry their id, requested or not.
        out.setdefault("id", page_id)
        return out

    # ------------------------------------------------------------------ objects

    def _object(self, ctx: _Ctx, object_id: str, edge: str | None) -> Any:
        self._auth(ctx)
        w = self.world
        page_acct = w.account_by_page(object_id)
        if page_acct is not None or object_id in w.extra_page_ids:
            ctx.kind = "page"
            ctx.app_usage = True
            if edge is not None:
                raise apierror.unknown_path(f"/{edge}")
            if page_acct is not None and not self._may_see(ctx, page_acct):
                raise apierror.object_missing(object_id)
            if page_acct is None and ctx.caller != "user":
                raise apierror.object_missing(object_id)
            return self._page_json(ctx, object_id, page_acct, self._parse(ctx, "name,id"))
        try:
            acct = w.account(object_id)
        except KeyError:
            media = w.media(object_id)
            if media is None or media.deleted:
                ctx.kind = "media" if edge is None else f"media_{edge}"
                raise apierror.object_missing(object_id) from None
            return self._media_object(ctx, media, edge)
        ctx.kind = "ig_user" if edge is None else f"ig_user_{edge}"
        if acct.gone or not self._may_see(ctx, acct):
            raise apierror.object_missing(object_id)
        self._need_read_permission(ctx, acct)
        if edge is None:
            self._charge(ctx, acct)
            return self._user_json(ctx, acct, self._parse(ctx, "id"))
        if edge == "insights":
            ctx.kind = "user_insights"
            self._charge(ctx, acct)
            self._need_insights_permission(ctx)
            query = insights.account_query(ctx.call.params, version=ctx.vnum, now=ctx.ts)
            data = insights.account_insights(w, acct, query, now=ctx.ts, served=ctx.served)
            if not data:
                return {"data": []}
            body: dict[str, Any] = {"data": data}
            paging = insights.account_paging(
                f"{ctx.call.base_url}/{ctx.version}",
                ctx.call.path,
                self._link_params(ctx),
                query,
            )
            if paging is not None:
                body["paging"] = paging
            return body
        if edge in ("media", "stories"):
            ctx.kind = "ig_media_list" if edge == "media" else "ig_stories"
            wanted = self._parse(ctx, "id")
            return self._media_listing(ctx, acct, edge, wanted, ctx.call.params, charge=True)
        raise apierror.unknown_path(f"/{edge}")

    def _media_object(self, ctx: _Ctx, media: world.Media, edge: str | None) -> Any:
        acct = self.world.account(media.ig_user_id)
        ctx.kind = "media" if edge is None else "media_insights" if edge == "insights" else "media"
        if acct.gone or not self._may_see(ctx, acct):
            raise apierror.object_missing(media.id)
        self._need_read_permission(ctx, acct)
        if edge is None:
            wanted = self._parse(ctx, "id")
            cost = 1 + (self.config.nested_insights_cost if _wants_insights(wanted) else 0)
            self._charge(ctx, acct, cost)
            return self._media_json(ctx, media, wanted)
        if edge != "insights":
            raise apierror.unknown_path(f"/{edge}")
        self._charge(ctx, acct)
        self._need_insights_permission(ctx)
        names = insights.list_param(ctx.call.params.get("metric"))
        if not names:
            raise apierror.invalid_param("The parameter metric is required")
        breakdowns = insights.list_param(ctx.call.params.get("breakdown"))
        if ctx.call.host == "instagram":
            metrics.validate_instagram_login_metrics(names, version=ctx.vnum)
        metrics.validate_media_metrics(names, breakdowns, version=ctx.vnum)
        data = insights.media_insights(
            self.world, media, names, breakdowns, version=ctx.vnum, now=ctx.ts, served=ctx.served
        )
        return {"data": data}

    # ------------------------------------------------------------------ refresh_access_token

    def _refresh(self, ctx: _Ctx) -> Any:
        """``GET /refresh_access_token?grant_type=ig_refresh_token`` (Instagram Login)."""
        params = ctx.call.params
        token = ctx.call.token
        if not token:
            raise apierror.no_token()
        if params.get("grant_type") != "ig_refresh_token":
            raise apierror.invalid_param("grant_type must be ig_refresh_token")
        acct = self.world.account_by_token(token)
        if acct is None or acct.login != "instagram":
            raise apierror.bad_token()
        ctx.app_usage = True
        try:
            fresh, expires_in = self.world.refresh_token(token, ctx.now)
        except ValueError as exc:
            if str(exc) == "expired":
                raise apierror.token_expired(acct.token_expires_at or ctx.now, ctx.now) from None
            # Meta's wording for a token under 24 h old is not documented (notes §3)
            raise apierror.ApiError(
                f"(#100) The access token cannot be refreshed ({exc}): a long-lived token can be "
                "refreshed once it is at least 24 hours old and before it expires",
                code=100,
            ) from None
        return {"access_token": fresh, "token_type": "bearer", "expires_in": expires_in}

    # ------------------------------------------------------------------ field rendering

    def _parse(self, ctx: _Ctx, default: str) -> list[fields.Field]:
        raw = ctx.call.params.get("fields")
        return fields.parse(raw if raw else default)

    @staticmethod
    def _select(
        wanted: list[fields.Field], getters: dict[str, Callable[[], Any]], node: str
    ) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for spec in wanted:
            getter = getters.get(spec.name)
            if getter is None:
                raise apierror.nonexisting_field(spec.name, node)
            value = getter()
            if value is not None:
                out[spec.name] = value
        if "id" in getters:
            out.setdefault("id", getters["id"]())
        return out

    def _user_json(
        self, ctx: _Ctx, acct: world.Account, wanted: list[fields.Field]
    ) -> dict[str, Any]:
        w = self.world
        ig = acct.ig_user_id
        served = ctx.served

        def counted(name: str, value: int) -> int:
            served.add(ig, ig, name, value, source="field")
            return value

        def forbidden() -> Any:
            raise apierror.no_permission()

        getters: dict[str, Callable[[], Any]] = {
            "id": lambda: ig,
            "username": lambda: acct.username,
            # graph.instagram.com's /me names the professional account's id user_id as well
            "user_id": lambda: ig,
            "name": lambda: acct.name,
            "followers_count": lambda: counted("followers_count", w.followers_count(ig, ctx.ts)),
            "follows_count": lambda: counted("follows_count", acct.follows),
            "media_count": lambda: counted("media_count", w.media_count(ig, ctx.now)),
            "biography": lambda: "A simulated Instagram professional account.",
            "website": lambda: f"https://example.com/{acct.username}",
            "profile_picture_url": lambda: f"https://scontent.cdninstagram.com/sim/{ig}.jpg",
            "ig_id": lambda: int(ig[-10:]),
            "legacy_instagram_user_id": lambda: str(int(ig[-10:])),
            "has_profile_pic": lambda: True,
            "is_published": lambda: True,
            "shopping_product_tag_eligibility": forbidden,
            # Known IG User fields the simulator has nothing for: absent, as Meta omits them.
            "business_discovery": lambda: None,
            "collaborative_media_search": lambda: None,
            "mentioned_comment": lambda: None,
            "mentioned_media": lambda: None,
            "owner_business": lambda: None,
            "shopping_review_status": lambda: None,
        }
        out: dict[str, Any] = {}
        for spec in wanted:
            if spec.name in ("media", "stories"):
                params = {"fields": _unparse(spec.children) if spec.children else "id"}
                if spec.modifiers.get("limit"):
                    params["limit"] = spec.modifiers["limit"][0]
                out[spec.name] = self._media_listing(
                    ctx, acct, spec.name, spec.children or [fields.Field("id", 0)], params,
                    charge=False,
                )  # fmt: skip
                continue
            getter = getters.get(spec.name)
            if getter is None:
                raise apierror.nonexisting_field(spec.name, "IGUser")
            value = getter()
            if value is not None:
                out[spec.name] = value
        out.setdefault("id", ig)
        return out

    def _media_json(
        self, ctx: _Ctx, media: world.Media, wanted: list[fields.Field]
    ) -> dict[str, Any]:
        acct = self.world.account(media.ig_user_id)
        out: dict[str, Any] = {}
        for spec in wanted:
            if spec.name == "insights":
                out["insights"] = self._expanded_insights(ctx, media, spec)
                continue
            value = self._media_field(ctx, media, acct, spec.name)
            if value is not None:
                out[spec.name] = value
        out.setdefault("id", media.id)
        return out

    def _media_field(self, ctx: _Ctx, media: world.Media, acct: world.Account, name: str) -> Any:
        """One IG Media field; None means absent (Meta omits fields without a value)."""
        story = media.is_story
        video = media.media_type == "VIDEO"
        if name == "id":
            return media.id
        if name == "media_type":
            return media.media_type
        if name == "media_product_type":
            return media.product_type
        if name == "timestamp":
            return world.graph_time(media.posted)
        if name in _MEDIA_COUNTS:
            if (story and name in _FEED_ONLY_COUNTS) or (name == "total_views_count" and not video):
                return None
            value = self.world.media_metric(media.id, _MEDIA_COUNTS[name], ctx.ts)
            assert value is not None
            ctx.served.add(media.id, media.ig_user_id, name, value, source="field")
            return int(value)
        if name == "permalink":
            if story:
                return f"https://instagram.com/stories/{acct.username}/{media.id}/"
            path = "reel" if media.product_type == "REELS" else "p"
            return f"https://www.instagram.com/{path}/{media.shortcode}/"
        if name == "shortcode":
            return media.shortcode
        if name == "caption":
            return media.caption
        if name == "media_url":
            ext = "mp4" if video else "jpg"
            return f"{_CDN}/{media.id}.{ext}" if media.has_media_url else None
        if name == "thumbnail_url":
            return f"{_CDN}/{media.id}_t.jpg" if video else None
        if name == "username":
            return acct.username
        if name == "owner":
            return {"id": acct.ig_user_id}
        if name in ("ig_id", "legacy_instagram_media_id"):
            return str(world.digest(media.id, "igid") % 10**19)
        if name == "is_comment_enabled":
            return None if story else True
        if name == "is_shared_to_feed":
            return True if media.product_type == "REELS" else None
        if name == "is_ai_generated":
            return False
        if name == "view_count":
            raise apierror.ApiError(
                "(#36104) You do not have permission to access this field outside of the "
                "Business Discovery API.",
                code=36104,
            )
        if name in _ABSENT_MEDIA_FIELDS:
            return None
        raise apierror.nonexisting_field(name, "IGMedia")

    def _expanded_insights(
        self, ctx: _Ctx, media: world.Media, spec: fields.Field
    ) -> dict[str, Any]:
        names = spec.modifiers.get("metric", [])
        if not names:
            raise apierror.invalid_param("The parameter metric is required")
        breakdowns = spec.modifiers.get("breakdown", [])
        self._need_insights_permission(ctx)
        if ctx.call.host == "instagram":
            metrics.validate_instagram_login_metrics(names, version=ctx.vnum)
        metrics.validate_media_metrics(names, breakdowns, version=ctx.vnum)
        data = insights.media_insights(
            self.world, media, names, breakdowns, version=ctx.vnum, now=ctx.ts, served=ctx.served
        )
        return {"data": data}

    # ------------------------------------------------------------------ lists and paging

    def _slice(
        self,
        ctx: _Ctx,
        ids: list[str],
        position: Callable[[str], tuple[int, bool]],
        params: dict[str, str] | None = None,
    ) -> tuple[list[str], bool, bool]:
        """The page of ``ids`` that limit/after/before select, and whether pages lie either side.

        ``position(id)`` gives how many ids come before the cursor's object and whether that
        object is still in the list (a deleted or expired one keeps its place in the order).
        """
        params = ctx.call.params if params is None else params
        raw_limit = params.get("limit", "25")
        try:
            limit = int(raw_limit)
        except ValueError:
            raise apierror.invalid_param("limit must be an integer") from None
        if limit <= 0:
            raise apierror.invalid_param("limit must be a positive integer")
        if limit > MAX_LIMIT:
            raise apierror.reduce_data()
        after, before = params.get("after"), params.get("before")
        try:
            if after:
                lt, present = position(decode_cursor(after))
                start = lt + (1 if present else 0)
                return ids[start : start + limit], start > 0, start + limit < len(ids)
            if before:
                end, _ = position(decode_cursor(before))
                start = max(0, end - limit)
                return ids[start:end], start > 0, end < len(ids)
        except (KeyError, ValueError):
            raise apierror.invalid_param("The cursor is not valid") from None
        return ids[:limit], False, limit < len(ids)

    def _link_params(self, ctx: _Ctx) -> dict[str, str]:
        params = {k: v for k, v in ctx.call.params.items() if k not in ("after", "before")}
        if ctx.call.token and "access_token" not in params:
            params["access_token"] = ctx.call.token
        return params

    def _listing(
        self,
        ctx: _Ctx,
        data: list[dict[str, Any]],
        chosen: list[str],
        has_prev: bool,
        has_next: bool,
        path: str | None = None,
        params: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        if not chosen:
            return {"data": []}
        link_params = self._link_params(ctx) if params is None else params
        base = f"{ctx.call.base_url}/{ctx.version}/{path or ctx.call.path}"
        paging: dict[str, Any] = {
            "cursors": {"before": encode_cursor(chosen[0]), "after": encode_cursor(chosen[-1])}
        }
        if has_prev:
            prev = dict(link_params, before=encode_cursor(chosen[0]))
            paging["previous"] = f"{base}?{urllib.parse.urlencode(prev)}"
        if has_next:
            nxt = dict(link_params, after=encode_cursor(chosen[-1]))
            paging["next"] = f"{base}?{urllib.parse.urlencode(nxt)}"
        return {"data": data, "paging": paging}

    def _media_listing(
        self,
        ctx: _Ctx,
        acct: world.Account,
        edge: str,
        wanted: list[fields.Field],
        params: dict[str, str],
        *,
        charge: bool,
    ) -> dict[str, Any]:
        w = self.world
        items = (
            w.media_of(acct.ig_user_id, ctx.now)
            if edge == "media"
            else w.stories_of(acct.ig_user_id, ctx.now)
        )
        items.sort(key=lambda m: (-m.posted, m.id))
        ids = [m.id for m in items]
        keys = [(-m.posted, m.id) for m in items]

        def position(cursor_id: str) -> tuple[int, bool]:
            media = w.media(cursor_id)
            if media is None:
                raise KeyError(cursor_id)
            key = (-media.posted, media.id)
            lt = bisect.bisect_left(keys, key)
            return lt, lt < len(keys) and keys[lt] == key

        chosen, has_prev, has_next = self._slice(ctx, ids, position, params)
        by_id = {m.id: m for m in items}
        expanded = _wants_insights(wanted)
        if charge:
            cost = 1 + (self.config.nested_insights_cost * len(chosen) if expanded else 0)
            self._charge(ctx, acct, cost)
        data = [self._media_json(ctx, by_id[mid], wanted) for mid in chosen]
        if charge:
            return self._listing(ctx, data, chosen, has_prev, has_next)
        link = dict(params)
        if ctx.call.token:
            link["access_token"] = ctx.call.token
        return self._listing(
            ctx, data, chosen, has_prev, has_next, path=f"{acct.ig_user_id}/{edge}", params=link
        )

    # ------------------------------------------------------------------ ?ids=

    def _multi_ids(self, ctx: _Ctx) -> Any:
        self._auth(ctx)
        ids = insights.list_param(ctx.call.params.get("ids"))
        w = self.world
        resolved: list[tuple[str, world.Account | None, world.Media | None]] = []
        missing = []
        for object_id in ids:
            page_acct = w.account_by_page(object_id)
            if page_acct is not None:
                resolved.append((object_id, page_acct, None))
                continue
            try:
                acct = w.account(object_id)
            except KeyError:
                media = w.media(object_id)
                if media is None or media.deleted:
                    missing.append(object_id)
                    continue
                acct = w.account(media.ig_user_id)
                resolved.append((object_id, acct, media))
                continue
            resolved.append((object_id, acct, None))
        visible = [
            r for r in resolved if r[1] is not None and not r[1].gone and self._may_see(ctx, r[1])
        ]
        missing += [r[0] for r in resolved if r not in visible]
        if missing:
            raise apierror.ApiError(
                f"(#803) Some of the aliases you requested do not exist: {','.join(missing)}",
                code=803,
            )
        wanted = self._parse(ctx, "id")
        out: dict[str, Any] = {}
        for object_id, owner, media in visible:
            assert owner is not None
            if object_id == owner.page_id:
                out[object_id] = self._page_json(ctx, object_id, owner, wanted)
                continue
            cost = 1 + (self.config.nested_insights_cost if _wants_insights(wanted) else 0)
            self._charge(ctx, owner, cost)
            if media is None:
                out[object_id] = self._user_json(ctx, owner, wanted)
            else:
                out[object_id] = self._media_json(ctx, media, wanted)
        return out

    # ------------------------------------------------------------------ debug_token

    def _debug_token(self, ctx: _Ctx) -> Any:
        self._auth(ctx, allow_app=True)
        ctx.app_usage = True
        w = self.world
        token = ctx.call.params.get("input_token")
        if not token:
            raise apierror.invalid_param("The parameter input_token is required")
        if token == w.app_token:
            return {
                "data": {
                    "app_id": w.app_id,
                    "type": "APP",
                    "application": w.app_name,
                    "is_valid": True,
                }
            }
        acct = w.account_by_token(token)
        if acct is None and token != w.user_token:
            return {
                "data": {
                    "error": {"code": 190, "message": "Invalid OAuth access token."},
                    "is_valid": False,
                    "scopes": [],
                }
            }
        accounts = [acct] if acct is not None else list(w.accounts)
        scopes = list(world.SCOPES)
        if acct is not None and _no_permission(acct):
            scopes.remove("instagram_manage_insights")
        data: dict[str, Any] = {
            "app_id": w.app_id,
            "type": "USER",
            "application": w.app_name,
        }
        if acct is not None:
            data["data_access_expires_at"] = int(acct.data_access_expires_at.timestamp())
            expires = acct.token_expires_at
            data["expires_at"] = int(expires.timestamp()) if expires is not None else 0
        else:
            data["data_access_expires_at"] = int(
                (w.created_at + w.config.data_access_lifetime).timestamp()
            )
            data["expires_at"] = 0
        valid = True
        if acct is not None:
            try:
                self._check_token_state(acct, ctx.now)
            except apierror.ApiError as err:
                valid = False
                error: dict[str, Any] = {"code": err.code, "message": err.message}
                if err.subcode is not None:
                    error["subcode"] = err.subcode
                data["error"] = error
        data["is_valid"] = valid
        issued = acct.token_issued_at if acct is not None else w.created_at
        data["issued_at"] = int(issued.timestamp())
        data["scopes"] = scopes
        data["granular_scopes"] = [
            {"scope": "instagram_basic", "target_ids": [a.ig_user_id for a in accounts]},
            {"scope": "instagram_manage_insights", "target_ids": [a.ig_user_id for a in accounts]}
            if "instagram_manage_insights" in scopes
            else None,
            {"scope": "pages_read_engagement", "target_ids": [a.page_id for a in accounts]},
            {"scope": "pages_show_list", "target_ids": [a.page_id for a in accounts]},
        ]
        data["granular_scopes"] = [g for g in data["granular_scopes"] if g is not None]
        data["user_id"] = acct.user_id if acct is not None else w.user_id
        return {"data": data}

    # ------------------------------------------------------------------ batch

    def _batch(self, ctx: _Ctx) -> Any:
        params = ctx.call.params
        raw = params.get("batch")
        if raw is None:
            raise apierror.invalid_param("The parameter batch is required")
        try:
            ops = json.loads(raw)
        except ValueError:
            ops = None
        if not isinstance(ops, list):
            raise apierror.invalid_param("batch parameter must be a JSON array")
        if len(ops) > MAX_BATCH:
            raise apierror.batch_too_big()
        include_headers = params.get("include_headers", "true").lower() != "false"
        out: list[dict[str, Any] | None] = []
        for op in ops:
            if self.faults.batch_null():
                out.append(None)
                continue
            sub = self._sub_call(ctx.call, op)
            if sub is None:
                err = apierror.invalid_param("Each batch operation needs a relative_url")
                body = err.body(self.trace_id())
                out.append(_element(400, {"Content-Type": JSON_TYPE}, body, include_headers))
                continue
            query = urllib.parse.urlencode(sub.params)
            fault = self.faults.pick(f"/{sub.version}/{sub.path}?{query}")
            if fault is not None and fault not in faults.ERROR_KINDS:
                if fault != "slow":
                    # A broken operation inside a batch shows up as a null slot.
                    self.record_transport_fault(sub, fault, 0)
                    out.append(None)
                    continue
                fault = None
            reply = self.handle(sub, fault=fault)
            headers = {"Content-Type": JSON_TYPE, **reply.headers}
            out.append(_element(reply.status, headers, reply.body, include_headers))
        return out

    @staticmethod
    def _sub_call(outer: Call, op: Any) -> Call | None:
        if not isinstance(op, dict) or not isinstance(op.get("relative_url"), str):
            return None
        url = urllib.parse.urlsplit(op["relative_url"].lstrip("/"))
        path = url.path
        version = outer.version
        first, _, rest = path.partition("/")
        if metrics.version_number(first) is not None:
            version, path = first, rest
        params = dict(urllib.parse.parse_qsl(url.query, keep_blank_values=True))
        body = op.get("body")
        if isinstance(body, str):
            params.update(urllib.parse.parse_qsl(body, keep_blank_values=True))
        token = params.pop("access_token", None) or outer.token
        if "appsecret_proof" not in params and "appsecret_proof" in outer.params:
            params["appsecret_proof"] = outer.params["appsecret_proof"]
        return Call(
            method=str(op.get("method", "GET")).upper(),
            version=version,
            path=path,
            params=params,
            token=token,
            base_url=outer.base_url,
            in_batch=True,
            host=outer.host,
        )


def _element(
    status: int, headers: dict[str, str], body: Any, include_headers: bool
) -> dict[str, Any]:
    element: dict[str, Any] = {"code": status}
    if include_headers:
        element["headers"] = [{"name": k, "value": v} for k, v in headers.items()]
    element["body"] = json.dumps(body, separators=(",", ":"))
    return element


def _record_path(call: Call) -> str:
    """The request path for the log (an unversioned call has no version segment)."""
    return "/" + "/".join(p for p in (call.version, call.path) if p)


def _refuse_legacy(call: Call) -> None:
    """A new app (created after 2026-11-04) may not use these (Graph API v27 announcement)."""
    if "ids" in call.params:
        raise apierror.invalid_param(
            "Multi-ID requests (?ids=) are not available to apps created after November 4, 2026"
        )
    if ".as(" in call.params.get("fields", ""):
        raise apierror.invalid_param(
            "Field aliases are not available to apps created after November 4, 2026"
        )
    if "async_batch_requests" in call.path or "asynchronous" in call.params:
        raise apierror.invalid_param(
            "Asynchronous batch requests are not available to apps created after November 4, 2026"
        )


def _wants_insights(wanted: list[fields.Field]) -> bool:
    return any(f.name == "insights" for f in wanted)


def _unparse(specs: list[fields.Field]) -> str:
    parts = []
    for spec in specs:
        text = spec.name
        for mod, args in spec.modifiers.items():
            text += f".{mod}({','.join(args)})"
        if spec.children is not None:
            text += "{" + _unparse(spec.children) + "}"
        parts.append(text)
    return ",".join(parts)


def _no_permission(acct: world.Account) -> bool:
    """The token lacks ``instagram_manage_insights``."""
    return acct.token_state == "no_permission"  # noqa: S105 - a state name, not a secret
