"""The units of work for one account: each calls the Graph API and returns what to store.

A job never writes to the database and never sleeps: it returns a ``models.Batch`` (and raises
for failures that concern the whole account: token, permission, throttling). Problems with one
object (a story below the viewer threshold, media posted before the business conversion, a
rejected metric) are handled here and recorded in the batch.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

import structlog

from collector import clock as clock_mod
from collector import errors, graph, metrics_catalog, models, parse, ratelimit, stories
from collector import plan as plan_mod

PROFILE_FIELDS = "id,username,followers_count,follows_count,media_count"
MEDIA_FIELDS = (
    "id,media_type,media_product_type,timestamp,permalink,caption,like_count,comments_count"
)
STORY_FIELDS = "id,media_type,media_product_type,timestamp,permalink,caption"
MAX_WINDOW = timedelta(days=30)
#: a metric set cannot lose more metrics than it has; bounds the drop-and-retry loop
_MAX_REJECTIONS = 40


@dataclasses.dataclass(frozen=True, slots=True)
class Target:
    """One account as the jobs see it."""

    ig_user_id: models.IgUserId
    name: str
    token: str = dataclasses.field(repr=False)


@dataclasses.dataclass
class Context:
    """What every job needs: the client and its limiter, the learned metric sets, the clock
    and the plan (page size, story lifetime and final lead, demographics timeframe)."""

    client: graph.GraphClient
    limiter: ratelimit.Limiter
    catalog: metrics_catalog.Catalog
    clock: clock_mod.Clock
    plan: plan_mod.Plan = dataclasses.field(default_factory=plan_mod.Plan)
    #: stop a multi-call job at the usage pause mark (off for final story snapshots)
    yield_at_pause: bool = True
    log: Any = dataclasses.field(default_factory=structlog.get_logger)


def context_for(
    *,
    client: graph.GraphClient,
    limiter: ratelimit.Limiter,
    catalog: metrics_catalog.Catalog,
    clock: clock_mod.Clock,
    plan: plan_mod.Plan,
    log: Any,
    overrides: Mapping[str, Sequence[str]] | None,
) -> Context:
    """The context of one account's jobs: its metric-set overrides over the shared catalog."""
    return Context(
        client=client,
        limiter=limiter,
        catalog=catalog.with_overrides(overrides) if overrides else catalog,
        clock=clock,
        plan=plan,
        log=log,
    )


def checkpoint(ctx: Context, target: Target, batch: models.Batch | None = None) -> None:
    """Between two calls of one job: stop if the account's usage reached the pause mark."""
    if not ctx.yield_at_pause:
        return
    limiter = ctx.limiter
    if limiter.level(target.ig_user_id) == "pause":
        percent = limiter.accounts[target.ig_user_id].percent or 0.0
        raise errors.BudgetPause(
            f"usage at {percent:.0f}% (pause mark {limiter.pause_at:.0f}%)", batch=batch
        )


class _Skips:
    """Collects ``parse`` skip reports for one job, logged once at the end."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}

    def __call__(self, reason: str, detail: str) -> None:
        key = f"{reason}:{detail}"
        self.counts[key] = self.counts.get(key, 0) + 1


def _error_record(
    target: Target, job: str, object_id: str | None, exc: errors.GraphError, at: datetime
) -> models.CollectionError:
    return models.CollectionError(
        ig_user_id=target.ig_user_id,
        occurred_at=at,
        job=job,
        object_id=object_id,
        error_class=type(exc).__name__,
        code=exc.code,
        subcode=exc.subcode,
        message=str(exc)[:2000],
        fbtrace_id=exc.fbtrace_id,
    )


# --------------------------------------------------------------------------- profile


async def profile(ctx: Context, target: Target, out: models.Batch | None = None) -> models.Batch:
    """``GET /{ig-user-id}?fields=username,followers_count,…``: one snapshot row."""
    batch = models.Batch() if out is None else out
    resp = await ctx.client.get(
        target.ig_user_id, {"fields": PROFILE_FIELDS}, token=target.token, account=target.ig_user_id
    )
    skips = _Skips()
    snap = parse.profile(resp.body, target.ig_user_id, ctx.clock.now(), skips)
    _log_skips(ctx, target, "profile", skips)
    if snap:
        batch.profiles.append(snap)
    return batch


# --------------------------------------------------------------------------- account insights


def day_windows(since: datetime, until: datetime) -> list[tuple[datetime, datetime]]:
    """Pacific-day buckets ``[start, end)`` covering ``since``..``until`` (the last may be open)."""
    windows = []
    start = parse.pacific_day_start(since)
    while start < until:
        end = parse.pacific_day_end(start)
        windows.append((start, end))
        start = end
    return windows


def range_windows(since: datetime, until: datetime) -> list[tuple[datetime, datetime]]:
    """Windows of at most 30 days (Meta rejects longer since/until spans)."""
    windows = []
    start = since
    while start < until:
        end = min(start + MAX_WINDOW, until)
        windows.append((start, end))
        start = end
    return windows


@dataclasses.dataclass
class _AccountOp:
    """One account-insights call still to make (its metrics shrink as the API rejects some)."""

    request: metrics_catalog.AccountRequest
    start: datetime | None
    end: datetime | None
    metrics: list[str]
    metric_type: str | None

    def params(self, ctx: Context) -> dict[str, graph.ParamValue]:
        params: dict[str, graph.ParamValue] = {
            "metric": self.metrics,
            "period": self.request.period,
        }
        if self.metric_type:
            params["metric_type"] = self.metric_type
        if self.request.breakdown:
            params["breakdown"] = self.request.breakdown
        if self.start is not None and self.end is not None:
            params["since"] = int(self.start.timestamp())
            params["until"] = int(self.end.timestamp())
        else:
            params["timeframe"] = ctx.plan.demographics_timeframe
        return params


async def account_insights(
    ctx: Context,
    target: Target,
    *,
    since: datetime,
    daily: bool = True,
    demographics: bool,
    out: models.Batch | None = None,
) -> models.Batch:
    """Account metrics for every Pacific day from ``since`` to now, and/or demographics.

    The calls (one per day and metric group, one per 30-day series window, one per demographic
    breakdown) travel together through the batch endpoint; a rejected metric is learned and
    its call made again without it. Rows land in ``out`` as they arrive, so what was
    collected before a failure or a cancellation is kept.
    """
    now = ctx.clock.now()
    batch = models.Batch() if out is None else out
    skips = _Skips()
    days = day_windows(since, now)
    series_since = max(parse.pacific_day_start(since), parse.pacific_day_start(now - MAX_WINDOW))
    pending: list[_AccountOp] = []
    for request in ctx.catalog.account_requests(daily=daily, demographics=demographics):
        if request.window == "day":
            windows: list[tuple[datetime | None, datetime | None]] = list(days)
        elif request.window == "range":
            windows = list(range_windows(series_since, parse.pacific_day_end(now)))
        else:
            windows = [(None, None)]
        pending.extend(
            _AccountOp(request, start, end, list(request.metrics), request.metric_type)
            for start, end in windows
        )
    path = f"{target.ig_user_id}/insights"
    for _ in range(_BATCH_ROUNDS + 2):
        if not pending:
            break
        retry: list[_AccountOp] = []
        while pending:
            checkpoint(ctx, target, batch)
            chunk, pending = pending[: graph.MAX_BATCH], pending[graph.MAX_BATCH :]
            ops = [graph.BatchOp(path, op.params(ctx), list(op.metrics)) for op in chunk]
            results = await call_many(ctx, target, ops)
            captured_at = ctx.clock.now()
            account_failure: errors.GraphError | None = None
            for op, result in zip(chunk, results, strict=True):
                if not isinstance(result, errors.GraphError):
                    batch.account_metrics.extend(
                        parse.account_insights(
                            result,
                            target.ig_user_id,
                            op.metrics,
                            captured_at,
                            period=op.request.period,
                            end_time=op.end
                            if op.end is not None
                            else parse.pacific_day_end(captured_at),
                            skipped=skips,
                        )
                    )
                elif isinstance(
                    result, errors.AccountError | errors.AccountThrottled | errors.AppThrottled
                ):
                    account_failure = account_failure or result
                elif isinstance(result, errors.InvalidMetric):
                    dropped = _learn(ctx, models.ObjectKind.ACCOUNT, result, op.metrics, batch)
                    op.metrics = [
                        m
                        for m in op.metrics
                        if m not in dropped
                        and m not in ctx.catalog.rejected(models.ObjectKind.ACCOUNT)
                    ]
                    if dropped and op.metrics:
                        retry.append(op)
                    elif not dropped:
                        batch.errors.append(
                            _error_record(target, "account_insights", None, result, captured_at)
                        )
                elif isinstance(result, errors.NeedsTotalValue) and op.metric_type != "total_value":
                    op.metric_type = "total_value"
                    retry.append(op)
                elif result.retryable:
                    retry.append(op)
                else:
                    batch.errors.append(
                        _error_record(target, "account_insights", None, result, captured_at)
                    )
            if account_failure is not None:
                raise account_failure
        # a metric learned in this round leaves the calls still queued for the next one too
        for op in retry:
            op.metrics = [
                m for m in op.metrics if m not in ctx.catalog.rejected(models.ObjectKind.ACCOUNT)
            ]
        pending = [op for op in retry if op.metrics]
    for _op in pending:
        batch.errors.append(
            _error_record(
                target,
                "account_insights",
                None,
                errors.TransientError("no answer after the batch retries"),
                ctx.clock.now(),
            )
        )
    _log_skips(ctx, target, "account_insights", skips)
    return batch


async def call_many(
    ctx: Context, target: Target, ops: Sequence[graph.BatchOp]
) -> list[graph.BatchResult]:
    """Several GETs in one round trip; a single one goes alone (a batch would cost a call
    more). Either way each answer is a body or the typed error that operation got."""
    if len(ops) == 1:
        op = ops[0]
        try:
            resp = await ctx.client.get(
                op.path,
                op.params,
                token=target.token,
                account=target.ig_user_id,
                metrics=op.metrics,
            )
        except errors.GraphError as exc:
            return [exc]
        return [resp.body]
    return await ctx.client.batch(ops, token=target.token, account=target.ig_user_id)


def _learn(
    ctx: Context,
    kind: models.ObjectKind,
    exc: errors.InvalidMetric,
    asked: Sequence[str],
    batch: models.Batch,
) -> set[str]:
    """Record the metrics ``exc`` names as unsupported for ``kind``; returns those dropped."""
    dropped = {m for m in exc.metrics if m in asked}
    now = ctx.clock.now()
    for metric in sorted(dropped):
        if ctx.catalog.reject(kind, metric):
            batch.verdicts.append(
                models.MetricVerdict(
                    kind, metric, ctx.catalog.api_version, False, str(exc)[:500], now
                )
            )
            ctx.log.warning(
                "metric_rejected", object_kind=str(kind), metric=metric, reason=str(exc)[:300]
            )
    return dropped


# --------------------------------------------------------------------------- media


async def media_discovery(
    ctx: Context,
    target: Target,
    known: set[str],
    *,
    walk_all: bool,
    out: models.Batch | None = None,
) -> models.Batch:
    """Walk ``/media`` newest first until a page holds known media (or to the end)."""
    batch = models.Batch() if out is None else out
    skips = _Skips()
    params: dict[str, graph.ParamValue] = {"fields": MEDIA_FIELDS, "limit": ctx.plan.page_size}
    async for page in ctx.client.pages(
        f"{target.ig_user_id}/media", params, token=target.token, account=target.ig_user_id
    ):
        now = ctx.clock.now()
        reached_known = False
        for item in page:
            media = parse.media_item(item, target.ig_user_id, now, skipped=skips)
            if media is None:
                continue
            if media.media_product_type == "STORY":
                continue  # /media lists no stories; if one shows up, /stories owns it
            reached_known = reached_known or media.media_id in known
            batch.media.append(media)
            batch.media_metrics.extend(parse.media_field_metrics(item, media.media_id, now))
        if reached_known and not walk_all:
            break
    _log_skips(ctx, target, "media_discovery", skips)
    return batch


@dataclasses.dataclass
class StoryListing:
    """What ``/stories`` returned: the stories, and which of them came with their insights."""

    batch: models.Batch
    stories: list[models.Media] = dataclasses.field(default_factory=list)
    polled: set[str] = dataclasses.field(default_factory=set)
    #: why the nested ``insights.metric(…)`` expansion was refused, if it was
    expansion_error: str | None = None


async def story_discovery(
    ctx: Context,
    target: Target,
    *,
    insights: Sequence[str] = (),
    out: models.Batch | None = None,
) -> StoryListing:
    """List the live stories (``/stories``), with their insights in the same call if asked.

    Field expansion (``insights.metric(…)``) snapshots every live story in one round trip; Meta
    fails the whole call when any story cannot serve a metric (fewer than 5 viewers, a metric
    its kind rejects), so a refused expansion falls back to the plain listing and the caller
    polls those stories one by one. Every snapshot taken here is a regular one: the final
    snapshot is a call of its own, with the navigation breakdown.
    """
    batch = models.Batch() if out is None else out
    if insights:
        try:
            return await _list_stories(ctx, target, list(insights), batch)
        except errors.InvalidMetric as exc:
            listing = await _list_stories(ctx, target, [], batch)
            _learn(ctx, models.ObjectKind.STORY, exc, list(insights), listing.batch)
            listing.expansion_error = str(exc)[:300]
            return listing
        except (errors.ObjectError, errors.InvalidRequest) as exc:
            listing = await _list_stories(ctx, target, [], batch)
            listing.expansion_error = f"{type(exc).__name__}: {str(exc)[:300]}"
            return listing
    return await _list_stories(ctx, target, [], batch)


async def _list_stories(
    ctx: Context, target: Target, insights: list[str], batch: models.Batch
) -> StoryListing:
    """One walk of ``/stories``; its rows reach ``batch`` only once the whole walk answered
    (a refused expansion is walked again without insights)."""
    listing = StoryListing(models.Batch())
    found = listing.batch
    skips = _Skips()
    fields = STORY_FIELDS
    if insights:
        fields += f",insights.metric({','.join(insights)})"
    params: dict[str, graph.ParamValue] = {"fields": fields, "limit": ctx.plan.page_size}
    async for page in ctx.client.pages(
        f"{target.ig_user_id}/stories", params, token=target.token, account=target.ig_user_id
    ):
        now = ctx.clock.now()
        for item in page:
            story = parse.media_item(
                item, target.ig_user_id, now, story_lifetime=ctx.plan.story_lifetime, skipped=skips
            )
            if story is None:
                continue
            found.media.append(story)
            listing.stories.append(story)
            nested = item.get("insights") if insights else None
            if isinstance(nested, dict):
                found.media_metrics.extend(
                    parse.media_insights(nested, story.media_id, insights, now, skipped=skips)
                )
                found.media_polls.append(
                    models.MediaPoll(story.media_id, now, models.InsightsStatus.OK)
                )
                listing.polled.add(story.media_id)
    _log_skips(ctx, target, "story_discovery", skips)
    batch.extend(found)
    listing.batch = batch
    return listing


async def media_insights(
    ctx: Context, target: Target, media: models.Media, out: models.Batch | None = None
) -> models.Batch:
    """One media object's (or story's) insights: its plain metrics, then each breakdown."""
    batch = models.Batch() if out is None else out
    skips = _Skips()
    kind = media.kind
    now = ctx.clock.now()
    is_story = kind is models.ObjectKind.STORY
    if is_story and stories.expired(now, media.expires_at):
        batch.media_polls.append(
            models.MediaPoll(media.media_id, now, models.InsightsStatus.GONE, reason="expired")
        )
        return batch
    is_final = is_story and stories.in_final_window(
        now, media.expires_at, ctx.plan.story_final_lead
    )
    groups: list[tuple[str | None, tuple[str, ...]]] = [(None, ctx.catalog.media_metrics(kind))]
    if not is_story or is_final:
        # A story's navigation breakdown is a lifetime counter: its final value says it all,
        # and leaving it out of the regular polls halves what they cost.
        groups.extend(ctx.catalog.media_breakdowns(kind))
    status = models.InsightsStatus.OK
    reason: str | None = None
    asked_any = False
    for breakdown, metric_set in groups:
        metrics = [m for m in metric_set if m not in ctx.catalog.rejected(kind)]
        if asked_any:
            checkpoint(ctx, target, batch)
        outcome = await _media_request(
            ctx, target, media, kind, breakdown, metrics, is_final, batch, skips
        )
        if outcome is None:
            continue
        asked_any = True
        if isinstance(outcome, errors.ObjectError):
            status = _status_of(outcome)
            reason = str(outcome)[:500]
            break
    if not asked_any and status is models.InsightsStatus.OK:
        status = models.InsightsStatus.UNAVAILABLE
        reason = f"every metric for {kind} was rejected"
    batch.media_polls.append(
        models.MediaPoll(
            media.media_id,
            ctx.clock.now(),
            status,
            is_final=is_final and status is models.InsightsStatus.OK,
            reason=reason,
        )
    )
    _log_skips(ctx, target, "media_insights", skips)
    return batch


#: rounds of a batched poll: a round retries what the previous one could not finish
_BATCH_ROUNDS = 4
#: operations in a batch while an account's cost per call is not known yet
PROBE_BATCH = 10


async def media_insights_many(
    ctx: Context,
    target: Target,
    items: Sequence[models.Media],
    *,
    out: models.Batch | None = None,
) -> models.Batch:
    """The plain metrics of many feed media, 50 per round trip (the batch endpoint).

    Each operation of a batch answers on its own, so one media object posted before the
    business conversion, deleted, or rejecting a metric costs nothing to the others; a
    rejected metric is learned and the media objects that asked for it are asked again
    without it in the next round.
    """
    batch = models.Batch() if out is None else out
    skips = _Skips()
    pending: dict[str, models.Media] = {}
    for media in items:
        if not ctx.catalog.media_metrics(media.kind):
            batch.media_polls.append(
                models.MediaPoll(
                    media.media_id,
                    ctx.clock.now(),
                    models.InsightsStatus.UNAVAILABLE,
                    reason=f"every metric for {media.kind} was rejected",
                )
            )
            continue
        pending[media.media_id] = media
    for _ in range(_BATCH_ROUNDS):
        if not pending:
            break
        retry: dict[str, models.Media] = {}
        ids = list(pending)
        while ids:
            checkpoint(ctx, target, batch)
            # no more operations in one request than the budget has room for: feed media are
            # the least urgent work, so they stop at the high-water mark
            room = ctx.limiter.headroom(target.ig_user_id)
            if room == 0 and ctx.yield_at_pause:
                raise errors.BudgetPause("usage at the high-water mark", batch=batch)
            size = PROBE_BATCH if room is None else max(1, min(graph.MAX_BATCH, room))
            chunk = [pending[i] for i in ids[:size]]
            ids = ids[size:]
            asked = {m.media_id: list(ctx.catalog.media_metrics(m.kind)) for m in chunk}
            ops = [
                graph.BatchOp(
                    f"{m.media_id}/insights", {"metric": asked[m.media_id]}, asked[m.media_id]
                )
                for m in chunk
            ]
            results = await call_many(ctx, target, ops)
            captured_at = ctx.clock.now()
            account_failure: errors.GraphError | None = None
            for media, result in zip(chunk, results, strict=True):
                metrics = asked[media.media_id]
                if not isinstance(result, errors.GraphError):
                    batch.media_metrics.extend(
                        parse.media_insights(
                            result, media.media_id, metrics, captured_at, skipped=skips
                        )
                    )
                    batch.media_polls.append(
                        models.MediaPoll(media.media_id, captured_at, models.InsightsStatus.OK)
                    )
                elif isinstance(
                    result, errors.AccountError | errors.AccountThrottled | errors.AppThrottled
                ):
                    account_failure = account_failure or result
                elif isinstance(result, errors.InvalidMetric):
                    if _learn(ctx, media.kind, result, metrics, batch) or (
                        set(metrics) - set(ctx.catalog.media_metrics(media.kind))
                    ):
                        retry[media.media_id] = media
                    else:
                        batch.errors.append(
                            _error_record(
                                target, "media_insights", media.media_id, result, captured_at
                            )
                        )
                elif isinstance(result, errors.ObjectError):
                    batch.media_polls.append(
                        models.MediaPoll(
                            media.media_id,
                            captured_at,
                            _status_of(result),
                            reason=str(result)[:500],
                        )
                    )
                elif result.retryable:
                    retry[media.media_id] = media
                else:
                    batch.errors.append(
                        _error_record(target, "media_insights", media.media_id, result, captured_at)
                    )
            if account_failure is not None:
                raise account_failure
        pending = retry
    for media_id in pending:
        batch.errors.append(
            _error_record(
                target,
                "media_insights",
                media_id,
                errors.TransientError("no answer after the batch retries"),
                ctx.clock.now(),
            )
        )
    _log_skips(ctx, target, "media_insights", skips)
    return batch


def _status_of(exc: errors.ObjectError) -> models.InsightsStatus:
    if isinstance(exc, errors.NotEnoughViewers):
        return models.InsightsStatus.BELOW_THRESHOLD
    if isinstance(exc, errors.BeforeConversion):
        return models.InsightsStatus.BEFORE_CONVERSION
    return models.InsightsStatus.GONE


async def _media_request(
    ctx: Context,
    target: Target,
    media: models.Media,
    kind: models.ObjectKind,
    breakdown: str | None,
    metrics: list[str],
    is_final: bool,
    batch: models.Batch,
    skips: _Skips,
) -> errors.ObjectError | bool | None:
    """Ask one metric group; drop rejected metrics and retry. None: nothing was left to ask."""
    for _ in range(_MAX_REJECTIONS):
        if not metrics:
            return None
        params: dict[str, graph.ParamValue] = {"metric": metrics}
        if breakdown:
            params["breakdown"] = breakdown
        try:
            resp = await ctx.client.get(
                f"{media.media_id}/insights",
                params,
                token=target.token,
                account=target.ig_user_id,
                metrics=metrics,
            )
        except errors.InvalidMetric as exc:
            dropped = _learn(ctx, kind, exc, metrics, batch)
            if not dropped:
                batch.errors.append(
                    _error_record(target, "media_insights", media.media_id, exc, ctx.clock.now())
                )
                return True
            metrics = [m for m in metrics if m not in dropped]
            continue
        except errors.ObjectError as exc:
            if not isinstance(exc, errors.NotEnoughViewers):
                ctx.log.info(
                    "media_unavailable",
                    account=target.name,
                    media_id=media.media_id,
                    reason=type(exc).__name__,
                )
            return exc
        except errors.InvalidRequest as exc:
            batch.errors.append(
                _error_record(target, "media_insights", media.media_id, exc, ctx.clock.now())
            )
            return True
        batch.media_metrics.extend(
            parse.media_insights(
                resp.body,
                media.media_id,
                metrics,
                ctx.clock.now(),
                is_final=is_final,
                # the breakdown call repeats the plain total; it is stored from the first call
                with_totals=breakdown is None or not _asked_plain(ctx, kind, metrics),
                skipped=skips,
            )
        )
        return True
    return True


def _asked_plain(ctx: Context, kind: models.ObjectKind, metrics: Sequence[str]) -> bool:
    plain = set(ctx.catalog.media_metrics(kind))
    return all(m in plain for m in metrics)


# --------------------------------------------------------------------------- tokens


async def token_check(ctx: Context, target: Target, out: models.Batch) -> graph.TokenInfo:
    """``debug_token`` for the account's token; the row recording what it said goes to
    ``out`` (also when the token is not valid, which raises ``TokenInvalid`` after)."""
    try:
        info = await ctx.client.debug_token(target.token)
    except errors.TokenInvalid:
        # refused before debug_token could answer (the token is its own access token)
        out.token_checks.append(
            models.TokenCheck(target.ig_user_id, False, None, None, (), ctx.clock.now())
        )
        raise
    out.token_checks.append(
        models.TokenCheck(
            target.ig_user_id,
            info.is_valid,
            info.expires_at,
            info.data_access_expires_at,
            info.scopes,
            ctx.clock.now(),
        )
    )
    if not info.is_valid:
        raise errors.TokenInvalid(
            f"debug_token reports the token as invalid: {info.error or 'no reason given'}"
        )
    return info


def insights_since(
    last_end: datetime | None, now: datetime, *, backfill_days: int, repoll_days: int
) -> datetime:
    """Where account insights start: the backfill for a new account, else the last day
    collected minus the re-poll window (Meta revises the last 48 h)."""
    if last_end is None:
        return now - timedelta(days=backfill_days)
    return min(last_end, now) - timedelta(days=repoll_days)


def _log_skips(ctx: Context, target: Target, job: str, skips: _Skips) -> None:
    if skips.counts:
        ctx.log.warning("bad_data_skipped", account=target.name, job=job, skipped=skips.counts)
