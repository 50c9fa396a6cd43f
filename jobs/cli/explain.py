"""`oasis explain`: why a track got its score (computed by `jobs.explain`;
this prints it as text or JSON)."""
from __future__ import annotations

import json

import numpy as np

from jobs import logs
from jobs.cli import args as a
from jobs.explain import PRICE_TOL, date_warnings, explain, explain_campaign
from pipelines.errors import UsageError
from schemas import PROMOTION_SURFACES


def register(sub) -> None:
    p = sub.add_parser(
        "explain", help="why a track got its score (or a campaign's lift): eligibility, estimates, value, "
                        "binding constraints, lift against the holdout",
        description="Explain one track's published promotion score in one market, per surface, from a published "
                    "snapshot: eligibility and reason, plays/skips/saves against the market baseline, the "
                    "shrinkage, the value, which constraints of its (market, surface) LP bind and their shadow "
                    "prices, the planned plays, boost probability and score, and its campaign's lift against the "
                    "holdout. With --campaign: that campaign's lift rows alone.")
    p.add_argument("--date", type=a.date_arg, required=True, metavar="SCORE_DATE",
                   help="the SCORE date (YYYY-MM-DD): the day the scores are for, i.e. the day after the last "
                        "day of logs (`oasis run --date D` publishes score date D+1)")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--track", help="track_id: why it got its score (needs --market)")
    what.add_argument("--campaign", help="campaign_id: its lift against the holdout, per market and surface")
    p.add_argument("--market", help="market (ISO 3166-1 alpha-2); optional with --campaign")
    p.add_argument("--surface", choices=list(PROMOTION_SURFACES), default=None,
                   help="one promotion surface (default: all three)")
    a.add_output(p, "output root of the runs")
    p.add_argument("--snapshot", default=None,
                   help="snapshot id (default: the one LATEST points to if it is for --date, else the newest "
                        "published for --date); a quarantined would-be snapshot's id explains that one, marked "
                        "as such")
    p.add_argument("--json", action="store_true", help="print machine-readable JSON instead of text")
    p.set_defaults(func=main, beam=False)


def main(args, _beam_args) -> int:
    for w in ([] if args.snapshot else date_warnings(args.output, args.date)):  # before any error, too
        logs.warning_line(f"oasis explain: note: {w}")
    if args.campaign:
        doc = explain_campaign(args.output, args.date, args.campaign, args.market, args.snapshot)
        print(json.dumps(doc, indent=2, sort_keys=False) if args.json else render_campaign(doc))
        return 0
    if not args.market:
        raise UsageError("--track needs --market")
    doc = explain(args.output, args.date, args.track, args.market, args.surface, args.snapshot)
    print(json.dumps(doc, indent=2, sort_keys=False) if args.json else render_text(doc))
    return 0


def _signed(v) -> str:
    return "n/a" if v is None else f"{100 * float(v):+.1f}%"


def lift_lines(rows: list[dict], rule: str, campaign_id: str, market: str | None) -> list[str]:
    """One line per campaign_lift row: the lift against the holdout with its 95%
    interval, the before/after figure beside it, and the arms behind them."""
    where = f" in {market}" if market else ""
    if not rows:
        return [f"  lift       no campaign_lift row for {campaign_id}{where} yet ({rule})"]
    out = [f"  lift       campaign {campaign_id}{where} against the holdout, 95% interval; historical = "
           f"before/after, no counterfactual"]
    for r in rows:
        arms = ("treated / holdout listeners" if r["method"] == "exposures"
                else "listeners a day, treated / holdout population (intent to treat, no exposure log)")
        out.append(f"             {r['market']} {r['surface']:<8} lift {_signed(r['lift'])} "
                   f"({_signed(r['lift_low'])} to {_signed(r['lift_high'])}), "
                   f"historical {_signed(r['historical_lift'])}; "
                   f"{num(r['exposed_listeners_treated'])} / {num(r['exposed_listeners_holdout'])} {arms}; "
                   f"incremental streams {num(r['incremental_streams'])} ({num(r['incremental_streams_low'])} to "
                   f"{num(r['incremental_streams_high'])})")
    return out


def render_campaign(doc: dict) -> str:
    head = [f"Lift of campaign {doc['campaign_id']} for {doc['score_date']}",
            f"  snapshot   {doc['snapshot_id']} ({doc['snapshot_chosen']}; logs up to {doc['as_of']})"]
    return "\n".join(head + lift_lines(doc["campaign_lift"], doc["lift_rule"], doc["campaign_id"], doc["market"]))


def num(v) -> str:
    """How the text prints a number: 6 significant digits."""
    if v is None:
        return "n/a"
    if isinstance(v, (int, np.integer)) and not isinstance(v, bool):
        return str(int(v))
    return format(float(v), ".6g")


def _pct(v) -> str:
    return "n/a" if v is None else f"{100 * float(v):.2f}%"


def render_text(doc: dict) -> str:
    cfg = doc["config"]
    L = []
    L.append(f"Why track {doc['track_id']} in {doc['market']} got its score for {doc['score_date']}")
    if doc.get("quarantined"):
        L.append(f"  *** {doc['snapshot_chosen']} ***")
    L.append(f"  snapshot   {doc['snapshot_id']} ({doc['snapshot_chosen']}; logs date {doc['as_of']})")
    L.append(f"             {doc['snapshot_dir']}")
    L.append(f"  campaign   {doc['campaign_id']}   artist {doc['artist_id']}   licensor {doc['licensor_id']}   "
             f"released {doc['release_date']}")
    L.append(f"  config     lambda (skip_penalty) = {num(cfg.get('skip_penalty'))}, "
             f"delta (guardrail_delta) = {num(cfg.get('guardrail_delta'))}, "
             f"guardrail confidence = {num(cfg.get('guardrail_confidence'))}, rho = {num(cfg.get('track_boost_cap'))}, "
             f"kappa = {num(cfg.get('promoted_share_cap'))}, phi = {num(cfg.get('artist_share_cap'))}, "
             f"psi = {num(cfg.get('licensor_share_cap'))}, window {cfg.get('window_days')} days "
             f"(half-life {num(cfg.get('half_life_days'))})")
    L += lift_lines(doc["campaign_lift"], doc["lift_rule"], doc["campaign_id"], doc["market"])
    for s in doc["surfaces"]:
        L.append("")
        L.append(f"== {s['surface']} " + "=" * (72 - len(s["surface"])))
        L.append(f"eligibility  {'ELIGIBLE' if s['eligible'] else 'NOT ELIGIBLE'}")
        L.append(f"             {s['reason_text']}")
        g = s["signals"]
        L.append(f"signals      window plays on {s['surface']}: {g['plays']} (decay-weighted {num(g['weighted_plays'])}); "
                 f"all promotion surfaces: {s['window_plays_all_surfaces']}")
        L.append(f"             skips {g['skips']}  raw rate {num(g['raw_skip_rate'])}   "
                 f"market baseline skip rate {num(g['baseline_skip_rate'])}")
        L.append(f"             saves {g['saves']}  raw rate {num(g['raw_save_rate'])}   "
                 f"market baseline save rate {num(g['baseline_save_rate'])}")
        L.append("shrinkage    empirical Bayes toward the prior mean m (the enrolled tracks' mean): shrunk = "
                 "(rate * n + k * m) / (n + k), n the effective plays")
        for kind in ("skip", "save"):
            h = s["shrinkage"][kind]
            L.append(f"             {kind} rate: decay-weighted {num(h['weighted_rate'])} on n = "
                     f"{num(h['effective_plays'])} effective plays, shrunk {_pct(h['shrunk_by'])} toward "
                     f"m = {num(h['prior_mean'])} (prior strength k = {num(h['prior_strength'])}) "
                     f"-> shrunk {kind}_rate {num(h['shrunk_rate'])}")
        L.extend(_guardrail_lines(s, doc["market"]))
        v = s["value"]
        sh = s["shrinkage"]
        L.append(f"value        save lift = {num(sh['save']['shrunk_rate'])} - {num(sh['save']['baseline_rate'])} = "
                 f"{num(v['save_lift'])};  skip lift = {num(sh['skip']['shrunk_rate'])} - "
                 f"{num(sh['skip']['baseline_rate'])} = {num(v['skip_lift'])}")
        L.append(f"             value = save lift - lambda x skip lift = ({num(v['save_lift'])}) - {num(v['lambda'])} x "
                 f"({num(v['skip_lift'])}) = {num(v['value'])}")
        if abs(v["recomputed"] - v["value"]) > 1e-9:
            L.append(f"             (note: recomputed from the published rates: {num(v['recomputed'])})")
        sp = s["supply"]
        interval = (f" (80% interval {num(sp['low'])} .. {num(sp['high'])}; {sp['history_days']} day(s) of "
                    f"history since its first play in the window)" if sp["low"] is not None else "")
        L.append(f"supply       E = {num(sp['supply_forecast'])} forecast organic plays{interval}, "
                 f"method {sp['method']}")
        basis = "the low end of E's interval" if sp["cap_basis"] == "lower" else "E"
        L.append(f"             max promoted plays rho*{basis} = {num(sp['max_promoted_plays'])}"
                 + ("" if s["eligible"] else " (0: not eligible)"))
        lp = s["lp"]
        if not s["eligible"]:
            r = s["result"]
            L.append(f"allocation   not in the LP of {doc['market']} {s['surface']}: an ineligible row is fixed at "
                     f"x = 0 ({s['reason']})")
            L.append(f"result       planned promoted plays x = {num(r['planned_promoted_plays'])}, boost probability "
                     f"{num(r['boost_probability'])}, score {num(r['score'])}")
            continue
        L.append(f"allocation   the {doc['market']} {s['surface']} LP ({lp['eligible_tracks']} eligible of "
                 f"{lp['tracks']} rows) rebuilt from the published columns; shadow prices {lp['prices_source']} "
                 f"(objective gained per unit the limit is relaxed)")
        cp = lp["capacity"]
        L.append(f"  capacity   sum x = {num(cp['planned_total'])} of K = {num(cp['capacity'])}   "
                 f"{_state(cp['tight'], cp['shadow_price'])}   shadow price {num(cp['shadow_price'])} "
                 f"(published {num(cp['published_shadow_price'])})")
        for owner in ("artist", "licensor"):
            c = lp[owner]
            L.append(f"  {owner:<11}{c[owner + '_id']}: sum x = {num(c['planned'])} of cap {num(c['cap'])} "
                     f"({c['eligible_tracks']} eligible track(s))   {_state(c['tight'], c['shadow_price'])}   "
                     f"shadow price {num(c['shadow_price'])}")
        tc = lp["track_cap"]
        L.append(f"  track cap  x = {num(tc['planned'])} of rho*E = {num(tc['cap'])}   "
                 f"{'x = rho*E: BINDS' if tc['tight'] else 'x < rho*E'}   shadow price {num(tc['shadow_price'])}")
        fl = lp["campaign_floor"]
        if fl is None:
            L.append(f"  floor      none: campaign {s['campaign_id']} is not live on {s['surface']} on the score date")
        else:
            L.append(f"  floor      {fl['campaign_id']}: planned {num(fl['planned'])} vs floor {num(fl['floor'])}, "
                     f"shortfall {num(fl['shortfall'])}: {fl['status'].upper()}   shadow price {num(fl['shadow_price'])}")
            L.append(f"             pacing x{num(fl['pacing_multiplier'])}: {num(fl['delivered_to_date'])} promoted "
                     f"plays delivered since {fl['flight_start']} (flight to {fl['flight_end']}); max boost "
                     f"{num(fl['max_boost'])} over {fl['eligible_tracks']} eligible track(s)")
        if s["eligible"]:
            L.append(f"  marginal   value - capacity - artist - licensor + floor prices = {num(lp['marginal_value'])}: "
                     f"the track {lp['why']}")
        else:
            L.append(f"  marginal   the track {lp['why']}")
        pc = lp["plan_check"]
        if not pc["published_is_optimal"]:
            L.append(f"  WARNING    the prices do not certify the published plan as this LP's optimum (objective "
                     f"{num(pc['published_objective'])} vs dual bound {num(pc['dual_bound'])}, relative gap "
                     f"{num(pc['relative_gap'])}"
                     + (f"; violations: {'; '.join(pc['violations'])}" if pc["violations"] else "") + ")")
        r = s["result"]
        L.append(f"result       planned promoted plays x = {num(r['planned_promoted_plays'])}, boost probability "
                 f"min(1, x/(E*g)) = {num(r['boost_probability'])} with serving gain g = {num(r['serving_gain'])}, "
                 f"score x/(rho*E) = {num(r['score'])}")
    return "\n".join(L)


def _guardrail_lines(s: dict, market: str) -> list[str]:
    gr = s["guardrail"]
    if not gr["evaluated"]:
        return ["guardrail    not evaluated: an earlier reason applies, and the previous snapshot did not pull the "
                "row back"]
    if gr.get("probability_surface") is not None:   # a snapshot written before the probabilities were published
        return [f"guardrail    P(true skip rate > baseline + delta = {num(gr['threshold'])}) = "
                f"{num(gr['probability_surface'])} on {s['surface']}, {num(gr['probability_pooled'])} pooled over "
                f"the track's surfaces in {market}; pulled back above {num(gr['confidence'])}: "
                f"{'DISLIKED' if gr['disliked'] else 'not disliked'}"]
    lines = [f"guardrail    P(true skip rate > baseline + delta = {num(gr['threshold'])}) = {num(gr['probability'])} "
             f"(the larger of {s['surface']}'s and the pooled test over the track's surfaces in {market})",
             f"             P(promoted skip rate > organic skip rate + {num(gr['promoted_delta'])}) = "
             f"{num(gr['promoted_probability'])} ({gr['promoted_skips']} of the {gr['promoted_plays']} promoted "
             f"plays here skipped)"]
    verdict = "PULLED BACK" if gr["pulled_back"] else "not pulled back"
    lines.append(f"             pulled back above {num(gr['confidence'])}: {verdict}"
                 + (f"; held over from the previous snapshot: reinstated only once no longer confidently above "
                    f"baseline + {num(gr['reinstate_delta'])} (hysteresis)" if gr["held_over"] else ""))
    return lines


def _state(tight: bool, price: float) -> str:
    if tight and price > PRICE_TOL:
        return "BINDS"
    if tight:
        return "tight (price 0)"
    return "slack"
