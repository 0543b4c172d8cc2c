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
    #: "facebook" (graph.facebook.com) or "instagram" (graph.instagram.com)
    login: str = "facebook"
    #: the ``[[sources]]`` entry that found the account; None: configured
    source: str | None = None
    #: when the token expires, where the collector knows it better than the API tells
    #: (a renewed Instagram Login token); None: ask ``debug_token``
    token_expires_at: datetime | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class Login:
    """One API's client and learned metric sets (Facebook Login, Instagram Login)."""

    client: graph.GraphClient
    catalog: metrics_catalog.Catalog
    #: the host serves the batch endpoint (graph.instagram.com: not documented, not used)
    batching: bool = True


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
    #: several calls travel in one batch request (False: one by one)
    batching: bool = True


def context_for(
    *,
    client: graph.GraphClient,
    limiter: ratelimit.Limiter,
    catalog: metrics_catalog.Catalog,
    clock: clock_mod.Clock,
    plan: plan_mod.Plan,
    log: Any,
    overrides: Mapping[str, Sequence[str]] | None,
    target: Target | None = None,
    logins: Mapping[str, Login] | None = None,
) -> Context:
    """The context of one account's jobs: the client and catalog of its login (``logins``,
    when given, else ``client``/``catalog``), with its metric-set overrides."""
    batching = True
    if target is not None and logins is not None and target.login in logins:
        chosen = logins[target.login]
        client, catalog, batching = chosen.client, chosen.catalog, chosen.batching
    return Context(
        client=client,
        limiter=limiter,
        catalog=catalog.with_overrides(overrides) if overrides else catalog,
        clock=clock,
        plan=plan,
        log=log,
        batching=batching,
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
    if snap:
        batch.profiles.append(snap)
    _log_skips(ctx, target, "profile", skips, batch)
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
    batch = models.Batch() if out is None else out
    skips = _Skips()
    await _account_insights(ctx, target, batch, skips, since, daily, demographics)
    _log_skips(ctx, target, "account_insights", skips, batch)
    return batch


async def _account_insights(
    ctx: Context,
    target: Target,
    batch: models.Batch,
    skips: _Skips,
    since: datetime,
    daily: bool,
    demographics: bool,
) -> None:
    now = ctx.clock.now()
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
    # oldest day first, every metric group of a day together: a job stopped by the budget
    # has then collected whole days, and the next one resumes after them
    pending.sort(key=lambda op: (op.request.window != "day", op.start or now))
    day_ops = [op for op in pending if op.request.window == "day"]
    path = f"{target.ig_user_id}/insights"
    for _ in range(_BATCH_ROUNDS + 2):
        if not pending:
            break
        retry: list[_AccountOp] = []
        while pending:
            chunk: list[_AccountOp] = []
            try:
                checkpoint(ctx, target, batch)
                chunk, pending = _take(ctx, target, batch, pending)
                results = await call_many(
                    ctx,
                    target,
                    [graph.BatchOp(path, op.params(ctx), list(op.metrics)) for op in chunk],
                )
                captured_at = ctx.clock.now()
                account_failure = _account_answers(
                    ctx, target, batch, skips, chunk, results, retry, captured_at
                )
                if account_failure is not None:
                    raise account_failure
            except errors.GraphError as exc:
                # where the next job resumes: the first day not answered yet (the whole chunk
                # counts as unanswered, so a day is never skipped, at worst asked again)
                exc.complete_until = _resume_point(day_ops, [*chunk, *pending, *retry])
                raise
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


def _resume_point(day_ops: list[_AccountOp], unanswered: list[_AccountOp]) -> datetime | None:
    """The end of the day buckets all answered: the first unanswered day's start (or the
    last day's end when every day was answered); None when the job asked no day buckets."""
    starts = [op.start for op in unanswered if op.request.window == "day" and op.start]
    if starts:
        return min(starts)
    return max((op.end for op in day_ops if op.end is not None), default=None)


def _take(
    ctx: Context, target: Target, batch: models.Batch, pending: list[_AccountOp]
) -> tuple[list[_AccountOp], list[_AccountOp]]:
    """The next calls to send together: no more than the budget has room for."""
    size = batch_size(ctx, target, batch)
    return pending[:size], pending[size:]


def batch_size(ctx: Context, target: Target, batch: models.Batch) -> int:
    """How many operations the next batch of a job may hold: as many as the account's budget
    allows before its high-water mark (a probe's worth while that is unknown). At the mark a
    job that may yield stops (``BudgetPause``, carrying ``batch``)."""
    room = ctx.limiter.headroom(target.ig_user_id)
    if room == 0 and ctx.yield_at_pause:
        raise errors.BudgetPause("usage at the high-water mark", batch=batch)
    return PROBE_BATCH if room is None else max(1, min(graph.MAX_BATCH, room))


def _account_answers(
    ctx: Context,
    target: Target,
    batch: models.Batch,
    skips: _Skips,
    chunk: list[_AccountOp],
    results: list[graph.BatchResult],
    retry: list[_AccountOp],
    captured_at: datetime,
) -> errors.GraphError | None:
    """Take in one batch's answers; returns the error that stops the account, if one came
    (after every other answer of the batch was kept)."""
    account_failure: errors.GraphError | None = None
    for op, result in zip(chunk, results, strict=True):
        if not isinstance(result, errors.GraphError):
            _accepted(ctx, models.ObjectKind.ACCOUNT, op.metrics, batch, captured_at)
            batch.account_metrics.extend(
                parse.account_insights(
                    result,
                    target.ig_user_id,
                    op.metrics,
                    captured_at,
                    period=op.request.period,
                    end_time=op.end if op.end is not None else parse.pacific_day_end(captured_at),
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
                if m not in dropped and m not in ctx.catalog.rejected(models.ObjectKind.ACCOUNT)
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
    return account_failure


async def call_many(
    ctx: Context, target: Target, ops: Sequence[graph.BatchOp]
) -> list[graph.BatchResult]:
    """Several GETs in one round trip; a single one goes alone (a batch would cost a call
    more). Either way each answer is a body or the typed error that operation got."""
    if len(ops) == 1 or not ctx.batching:
        results: list[graph.BatchResult] = []
        for op in ops:
            try:
                resp = await ctx.client.get(
                    op.path,
                    op.params,
                    token=target.token,
                    account=target.ig_user_id,
                    metrics=op.metrics,
                )
            except errors.GraphError as exc:
                results.append(exc)
                if isinstance(exc, errors.AccountError | errors.AccountThrottled):
                    # the rest would fail the same way: the caller handles the account
                    results.extend(exc for _ in ops[len(results) :])
                    break
                continue
            results.append(resp.body)
        return results
    return await ctx.client.batch(ops, token=target.token, account=target.ig_user_id)


def _accepted(
    ctx: Context,
    kind: models.ObjectKind,
    metrics: Sequence[str],
    batch: models.Batch,
    at: datetime,
) -> None:
    """The API answered for ``metrics`` of ``kind``: recorded in ``metric_support`` (once per
    process and metric), so it holds what was accepted as well as what was rejected."""
    for metric in ctx.catalog.accept(kind, metrics):
        batch.verdicts.append(
            models.MetricVerdict(kind, metric, ctx.catalog.api_version, True, "accepted", at)
        )


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
        f"{target.ig_user_id}/media",
        params,
        token=target.token,
        account=target.ig_user_id,
        on_cut=lambda exc: _listing_cut(ctx, target, "media_discovery", exc, batch),
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
            batch.media_metrics.extend(parse.media_field_metrics(item, media.media_id, now, skips))
        if reached_known and not walk_all:
            break
    _log_skips(ctx, target, "media_discovery", skips, batch)
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
        f"{target.ig_user_id}/stories",
        params,
        token=target.token,
        account=target.ig_user_id,
        on_cut=lambda exc: _listing_cut(ctx, target, "story_discovery", exc, found),
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
                _accepted(ctx, models.ObjectKind.STORY, insights, found, now)
                found.media_metrics.extend(
                    parse.media_insights(nested, story.media_id, insights, now, skipped=skips)
                )
                found.media_polls.append(
                    models.MediaPoll(story.media_id, now, models.InsightsStatus.OK)
                )
                listing.polled.add(story.media_id)
    _log_skips(ctx, target, "story_discovery", skips, found)
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
    #: one poll is one capture: every group's values carry the time of the first answer
    stamp: dict[str, datetime] = {}
    for breakdown, metric_set in groups:
        metrics = [m for m in metric_set if m not in ctx.catalog.rejected(kind)]
        if asked_any:
            checkpoint(ctx, target, batch)
        outcome = await _media_request(
            ctx, target, media, kind, breakdown, metrics, is_final, batch, skips, stamp
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
            stamp.get("at") or ctx.clock.now(),
            status,
            is_final=is_final and status is models.InsightsStatus.OK,
            reason=reason,
        )
    )
    _log_skips(ctx, target, "media_insights", skips, batch)
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
            # feed media are the least urgent work: they stop at the high-water mark
            size = batch_size(ctx, target, batch)
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
                    _accepted(ctx, media.kind, metrics, batch, captured_at)
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
    _log_skips(ctx, target, "media_insights", skips, batch)
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
    stamp: dict[str, datetime],
) -> errors.ObjectError | bool | None:
    """Ask one metric group; drop rejected metrics and retry. None: nothing was left to ask.
    Values carry ``stamp["at"]``, set by the first group that answered."""
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
        at = stamp.setdefault("at", ctx.clock.now())
        _accepted(ctx, kind, metrics, batch, at)
        batch.media_metrics.extend(
            parse.media_insights(
                resp.body,
                media.media_id,
                metrics,
                at,
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
        if target.login == "instagram":
            info = await instagram_token_info(ctx, target)
        else:
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


async def instagram_token_info(ctx: Context, target: Target) -> graph.TokenInfo:
    """An Instagram Login token has no ``debug_token`` (a graph.facebook.com endpoint): it is
    valid when ``/me`` answers as its account; its expiry is what the renewal learned."""
    resp = await ctx.client.get(
        "me", {"fields": "user_id,username"}, token=target.token, account=target.ig_user_id
    )
    body = resp.body if isinstance(resp.body, dict) else {}
    found = str(body.get("user_id") or body.get("id") or "")
    valid = found == target.ig_user_id
    return graph.TokenInfo(
        is_valid=valid,
        type="INSTAGRAM_USER",
        app_id=None,
        user_id=found or None,
        expires_at=target.token_expires_at,
        data_access_expires_at=None,
        scopes=(),
        error=None if valid else f"the token belongs to account {found or 'unknown'}",
    )


def insights_since(
    last_end: datetime | None, now: datetime, *, backfill_days: int, repoll_days: int
) -> datetime:
    """Where account insights start: the backfill for a new account, else the last day
    collected minus the re-poll window (Meta revises the last 48 h)."""
    if last_end is None:
        return now - timedelta(days=backfill_days)
    return min(last_end, now) - timedelta(days=repoll_days)


def _listing_cut(
    ctx: Context, target: Target, job: str, exc: errors.ListingTruncated, batch: models.Batch
) -> None:
    """A listing that could not be walked to its end: what it read stays, the cut is recorded."""
    ctx.log.warning("listing_truncated", account=target.name, job=job, reason=str(exc)[:300])
    batch.errors.append(_error_record(target, job, None, exc, ctx.clock.now()))


def _log_skips(ctx: Context, target: Target, job: str, skips: _Skips, batch: models.Batch) -> None:
    """Report what ``parse`` left out or repaired: one log line and one ``collection_error``
    row per job, so bad data shows in ``account_health`` and not only in the journal."""
    if not skips.counts:
        return
    ctx.log.warning("bad_data_skipped", account=target.name, job=job, skipped=skips.counts)
    summary = ", ".join(f"{key} x{n}" for key, n in sorted(skips.counts.items()))
    batch.errors.append(
        models.CollectionError(
            ig_user_id=target.ig_user_id,
            occurred_at=ctx.clock.now(),
            job=job,
            object_id=None,
            error_class="BadData",
            code=None,
            subcode=None,
            message=parse.storable(f"bad data skipped or repaired: {summary}")[:2000],
            fbtrace_id=None,
        )
    )
