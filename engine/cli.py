"""The ``maotrade`` command (console script ``maotrade = engine.cli:main``).

The CLI operates the running system, so it lives with the engine. Engine modules are
imported inside each command, never at import time, so ``maotrade --help`` stays quick.
"""
from __future__ import annotations

import json
import os
import sys
import time
from typing import Optional

import click

from maotrade import __version__
from maotrade.errors import MAOTradeError
from maotrade.protocol import from_client, to_client

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


def _data_dir(value: Optional[str]):
    from engine.paths import data_dir
    return data_dir(value)


def _fail(exc: Exception) -> None:
    click.echo(f"error: {exc}", err=True)
    sys.exit(2)


data_dir_option = click.option("--data-dir", envvar="MAOTRADE_DATA_DIR", metavar="DIR",
                               help="Where the journal, registry, keys and logs live "
                                    "[env MAOTRADE_DATA_DIR; default: the user's data folder].")


@click.group(context_settings=CONTEXT)
@click.version_option(__version__, prog_name="maotrade")
def main() -> None:
    """MAOTrade: one trading engine, many brokers.

    Start with `maotrade start --account 123`: it runs the demo account on the paper
    broker with an embedded config service. See `maotrade COMMAND --help`.
    """


@main.command(context_settings=CONTEXT)
@click.option("--account", "accounts", multiple=True, required=True, metavar="ID",
              help="Account to run (repeatable; one worker process each).")
@click.option("--config-url", envvar="MAOTRADE_CONFIG_URL", metavar="URL",
              help="Config service base URL [env MAOTRADE_CONFIG_URL]; without it an embedded "
                   "service runs on loopback, seeded from conf/ with demo account 123.")
@click.option("--strategy", "strategies", multiple=True, metavar="FILE.py:CLASS|MODULE:CLASS",
              help="Strategy to run in its own process (repeatable): a file (my_strategy.py:MyStrategy) or a "
                   "module, also looked for in the current directory and --strategy-path "
                   "(e.g. maotrade.examples.demo:DemoStrategy).")
@click.option("--strategy-path", "strategy_path", multiple=True, metavar="DIR",
              type=click.Path(file_okay=False, exists=True),
              help="Directory to import strategy modules from (repeatable).")
@click.option("--on-strategy-failure", type=click.Choice(["restart", "stop"]), default="restart", show_default=True,
              help="When a strategy process dies: start it again with backoff (1 s doubling to 60 s), or stop "
                   "the engine (exit code 1).")
@click.option("--param", "params", multiple=True, metavar="KEY=VALUE",
              help="Parameter passed to every strategy (repeatable; values parsed as JSON when possible).")
@click.option("--no-demo", is_flag=True, help="With the embedded config service, do not run the demo strategy.")
@click.option("--duration", type=float, metavar="SECONDS", help="Stop by itself after this many seconds.")
@click.option("--no-bars", is_flag=True, help="Do not print completed bars.")
@click.option("--listen", metavar="tcp://HOST:PORT",
              help="Also accept clients over tcp; they must present a CurveZMQ key authorized with "
                   "`maotrade keys add` (ipc clients on this host need none).")
@click.option("--durability", type=click.Choice(["normal", "full"]), default="normal", show_default=True,
              help="Journal commits: normal survives a killed process; full also survives power loss "
                   "(an fsync per order).")
@click.option("--heartbeat-timeout", default=15.0, show_default=True, metavar="SECONDS",
              help="Restart a worker silent for this long.")
@click.option("--unknown-timeout", default=60.0, show_default=True, metavar="SECONDS",
              type=click.FloatRange(min=1.0),
              help="An order the broker has said nothing about for this long becomes UNKNOWN (its owner is "
                   "told; the broker is asked again, the order never resent).")
@click.option("--log-level", default="INFO", show_default=True,
              type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False),
              help="Level of the log file (the console has -v/-q).")
@click.option("-v", "--verbose", count=True,
              help="Console: also informational log lines (-vv: debug).")
@click.option("-q", "--quiet", is_flag=True,
              help="Console: only warnings and errors (no bars, fills or balances).")
@click.option("--risk-config", type=click.Path(dir_okay=False), metavar="FILE",
              help="Risk settings (defaults and limits across all accounts) [default: conf/risk.json].")
@click.option("--api-port", type=click.IntRange(1, 65535), metavar="PORT",
              help="Serve the engine's REST API, webhooks and dashboard (/ui/) on this port "
                   "(token: MAOTRADE_API_TOKEN or api.token in the data dir).")
@click.option("--api-host", default="127.0.0.1", show_default=True, help="Address the REST API listens on.")
@click.option("--notify-config", type=click.Path(dir_okay=False), metavar="FILE",
              help="Notification settings (Telegram, webhooks) [default: notify.json in the data dir, if any].")
@click.option("--trusted-proxy", "trusted_proxies", multiple=True, metavar="ADDRESS",
              help="A reverse proxy whose X-Forwarded-For names the client (repeatable; default none).")
@click.option("--allow-broker-class", "allow_broker_classes", multiple=True, metavar="PATH",
              help="Also allow this brokerClass (package.module.Class, or package.module.* ; repeatable) "
                   "[env MAOTRADE_ALLOW_BROKER_CLASS]; the brokers under account_managers/ always are.")
@click.option("--config-ca-file", type=click.Path(dir_okay=False, exists=True), metavar="FILE",
              help="CA certificate the config service's TLS certificate must chain to.")
@data_dir_option
def start(accounts, config_url, strategies, strategy_path, on_strategy_failure, params, no_demo, duration, no_bars,
          listen, durability, heartbeat_timeout, unknown_timeout, log_level, verbose, quiet, risk_config, api_port,
          api_host, notify_config, trusted_proxies, allow_broker_classes, config_ca_file, data_dir) -> None:
    """Run the engine for one or more accounts until Ctrl-C, SIGTERM or `maotrade stop`.

    Exits 0 after a clean stop, 1 when a strategy failure stopped it (--on-strategy-failure
    stop) or every account failed for good (the line before says why), 2 on bad options or
    configuration.
    """
    from engine.options import EngineOptions
    from engine.runner import start as run

    try:
        options = EngineOptions(
            data_dir=_data_dir(data_dir), accounts=accounts, config_url=config_url, config_ca_file=config_ca_file,
            strategies=strategies, strategy_path=strategy_path, strategy_params=_parse_params(params),
            on_strategy_failure=on_strategy_failure, no_demo=no_demo, duration=duration, log_level=log_level,
            verbosity=-1 if quiet else verbose, show_bars=not no_bars, heartbeat_timeout=heartbeat_timeout,
            unknown_timeout=unknown_timeout, listen=listen, durability=durability, risk_config=risk_config,
            notify_config=notify_config, api_port=api_port, api_host=api_host, trusted_proxies=trusted_proxies,
            allow_broker_classes=allow_broker_classes)
        code = run(options, echo=click.echo)
    except MAOTradeError as exc:
        _fail(exc)
    sys.exit(code)


def _parse_params(items) -> dict:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{item!r} is not KEY=VALUE", param_hint="--param")
        try:
            out[key] = json.loads(value)
        except ValueError:
            out[key] = value
    return out


def _engine_info(data_dir) -> dict:
    from maotrade.client import engine_info
    from maotrade.errors import ConfigError

    try:
        return engine_info(data_dir)
    except ConfigError as exc:
        click.echo(str(exc), err=True)
        sys.exit(1)


def _engine_client(data_dir):
    from maotrade.client import EngineClient

    info = _engine_info(data_dir)
    return EngineClient(info["client_address"], name=""), info


@main.command(context_settings=CONTEXT)
@click.option("--json", "as_json", is_flag=True, help="Print the full status as JSON.")
@data_dir_option
def status(as_json, data_dir) -> None:
    """Show accounts, connection state, worker pid, CPU, memory, positions and open orders."""
    client, _ = _engine_client(_data_dir(data_dir))
    try:
        answer = client.request(from_client.StatusRequest(), to_client.Status.TYPE, timeout=5)["status"]
    except MAOTradeError as exc:
        _fail(exc)
    finally:
        client.close()
    if as_json:
        click.echo(json.dumps(answer, indent=2, sort_keys=True))
        return
    engine = answer["engine"]
    click.echo(f"engine pid {engine['pid']}  up {engine['uptime_s']:.0f}s  "
               f"refused orders {engine['orders_refused']}  malformed messages {engine['malformed_messages']}")
    for acc in answer["accounts"]:
        info = acc.get("account_info") or {}
        mem = f"{acc['rss_bytes'] / 2**20:.0f} MiB" if acc.get("rss_bytes") else "-"
        cpu = f"{acc['cpu_percent']:.0f}%" if acc.get("cpu_percent") is not None else "-"
        reason = f" ({acc['reason']})" if acc.get("reason") else ""
        click.echo(f"account {acc['account']} [{acc['broker']}] {acc['state']}{reason}  pid {acc['pid'] or '-'}"
                   f"  cpu {cpu}  mem {mem}  restarts {acc['restarts']}")
        if info:
            click.echo(f"  balance {info.get('balance', 0):,.2f} {info.get('currency', '')}  "
                       f"equity {info.get('equity', 0):,.2f}  available {info.get('available', 0):,.2f}")
        for pos in acc["portfolio"]["positions"]:
            if pos["qty"]:
                click.echo(f"  position {pos['epic']} {pos['qty']:g} @ {pos['avg_price']:.5g}  "
                           f"open P&L {pos['unrealized_pnl']:,.2f}  realized {pos['realized_pnl']:,.2f}")
        for order in acc["portfolio"]["orders"]:
            click.echo(f"  order {order['client_order_id']} {order['qty']:g} {order['epic']} "
                       f"{order['order_type']} {order.get('price') or ''} {order['status']}")
        for stale in acc.get("stale_data") or []:
            click.echo(f"  STALE market data: {stale['epic']} {stale['time_frame']}s (no data beyond tolerance)")
        if acc.get("discrepancies"):
            click.echo(f"  {acc['discrepancies']} unresolved discrepancies with the broker")
    for strat in answer.get("strategies") or []:
        why = f" ({strat['reason']})" if strat.get("reason") and strat["state"] != "running" else ""
        again = f", restart in {strat['restart_in_s']:g}s" if strat.get("restart_in_s") is not None else ""
        last = f"  last failure: {strat['reason']}" if strat.get("reason") and strat["state"] == "running" else ""
        click.echo(f"strategy {strat['name']} [{strat['target']}] {strat['state']}{why}  pid {strat['pid'] or '-'}"
                   f"  restarts {strat['restarts']}{again}{last}")


@main.command(context_settings=CONTEXT)
@click.option("--timeout", default=30.0, show_default=True, help="Seconds to wait for the engine to exit.")
@data_dir_option
def stop(timeout, data_dir) -> None:
    """Stop the running engine cleanly (strategies, then workers, then the journal)."""
    client, info = _engine_client(_data_dir(data_dir))
    try:
        client.request(from_client.StopEngine(), to_client.Stopping.TYPE, timeout=5)
    except MAOTradeError as exc:
        _fail(exc)
    finally:
        client.close()
    if not _wait_gone(info["pid"], timeout):
        click.echo(f"engine {info['pid']} did not stop within {timeout:g}s", err=True)
        sys.exit(1)
    click.echo(f"engine {info['pid']} stopped")


def _wait_gone(pid: int, timeout: float) -> bool:
    """Wait until ``pid`` has exited (a zombie awaiting its parent counts as exited)."""
    import psutil

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.1)
    return False


# -- backtest ------------------------------------------------------------------------------------
@main.command(context_settings=CONTEXT)
@click.option("--strategy", "target", metavar="FILE.py:CLASS|MODULE:CLASS",
              help="Strategy class: a file (my_strategy.py:MyStrategy) or a module on the path "
                   "(maotrade.examples.ma_cross:MovingAverageCross); modules are also looked for in "
                   "the current directory and --strategy-path.")
@click.option("--strategy-path", "strategy_path", multiple=True, metavar="DIR",
              type=click.Path(file_okay=False, exists=True),
              help="Directory to import strategy modules from (repeatable).")
@click.option("--data", "data_files", multiple=True, metavar="[EPIC=]FILE",
              help="OHLCV bars, CSV (optionally .gz) or Parquet (repeatable). Files of one instrument are "
                   "merged in time order; EPIC=FILE names the instrument of each file for a run over several "
                   "(a plain FILE is --epic's). Columns: date/time/timestamp (epoch s or ms, or ISO 8601), "
                   "open, high, low, close[, volume]. Without --data or --sample, the bars of --epic come "
                   "from the history store (`maotrade download`).")
@click.option("--timerange", metavar="YYYYMMDD-YYYYMMDD", help="Only bars from the first day up to, not "
                                                                "including, the second (either may be empty).")
@click.option("--data-account", metavar="ID", help="With the history store: the account whose download to use "
                                                   "(needed only when several hold the instrument).")
@data_dir_option
@click.option("--sample", is_flag=True,
              help="Use the sample data shipped with MAOTrade (synthetic one-minute EURUSD and GBPUSD bars, "
                   "two weeks; only --epic's if given).")
@click.option("--epic", help="Instrument of plain --data files; passed to the strategy as the 'epic' parameter.")
@click.option("--time-frame", default=60, show_default=True, type=click.IntRange(min=1), metavar="SECONDS",
              help="Bar length of the data (finer bars are aggregated into it); passed to the strategy as "
                   "'time_frame'. A strategy may subscribe to multiples of it.")
@click.option("--initial-balance", default=100_000.0, show_default=True, type=click.FloatRange(min=0, min_open=True),
              help="Starting cash.")
@click.option("--commission", default=0.0, show_default=True, type=click.FloatRange(0, 0.1, max_open=True),
              help="Commission per fill as a fraction of notional (0.0001 = 1 basis point).")
@click.option("--slippage", default=0.0, show_default=True, type=click.FloatRange(0, 0.1, max_open=True),
              help="Fraction of price lost on market and stop fills.")
@click.option("--param", "params", multiple=True, metavar="KEY=VALUE",
              help="Strategy parameter (repeatable; values parsed as JSON when possible).")
@click.option("--account", default="backtest", show_default=True, help="Account id the strategy sees.")
@click.option("--keep-going", is_flag=True,
              help="When a strategy callback raises, count it and carry on (default: print the traceback "
                   "and stop with exit code 1).")
@click.option("--rerun", "rerun_file", type=click.Path(dir_okay=False, exists=True), metavar="RESULTS.json",
              help="Run again exactly what an earlier results.json records (its data files must be unchanged).")
@click.option("--out", "out_dir", metavar="DIR", type=click.Path(file_okay=False),
              help="Where trades.csv, results.json, equity.png and report.html go [default: a new folder "
                   "backtest-<UTC time>-<strategy> under <data dir>/reports, where the dashboard lists it].")
@click.option("--no-chart", is_flag=True, help="Do not draw equity.png.")
@click.option("--no-html", is_flag=True, help="Do not write report.html.")
@click.option("--no-progress", is_flag=True, help="Never show the progress bar.")
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON instead of the summary.")
def backtest(target, strategy_path, data_files, timerange, data_account, data_dir, sample, epic, time_frame,
             initial_balance, commission, slippage, params, account, keep_going, rerun_file, out_dir, no_chart,
             no_html, no_progress, as_json) -> None:
    """Run a strategy unchanged on historical bars, with the paper broker's matching.

    One or several instruments (bars of all merged in time order). Market orders fill at
    the next bar's open plus slippage, limit and stop orders when a bar's high/low reaches
    them, stop loss and take profit on the bar's range; commission is charged on every
    fill. Prints total and annualised return, Sharpe, Sortino, max drawdown and its
    duration, win rate, profit factor, trades, exposure, buy and hold, exits by reason and
    bars/second. A strategy error prints its traceback and exits 1; parameters the
    strategy refuses exit 2. Example, with no download:

    \b
    maotrade backtest --strategy maotrade.examples.ma_cross:MovingAverageCross \\
        --sample --epic EURUSD
    """
    from maotrade.backtest import command
    from maotrade.backtest.runner import StrategyFailed

    try:
        if rerun_file:
            spec = command.check_rerun(json.loads(open(rerun_file).read()))
        else:
            if not target:
                raise click.UsageError("give --strategy (or --rerun RESULTS.json)")
            spec = {"strategy": target, "strategy_path": list(strategy_path),
                    "data": command.data_sources(list(data_files), epic, sample, _history_root(data_dir),
                                                 data_account),
                    "timerange": timerange, "time_frame": time_frame,
                    "params": _parse_params(params), "initial_balance": initial_balance,
                    "commission": commission, "slippage": slippage, "account": account,
                    "keep_going": keep_going}
        result, info = command.execute(spec, show_progress=not no_progress and not as_json)
        out_dir = out_dir or _new_report_dir(data_dir, "backtest", spec["strategy"])
        command.report(result, info, out_dir, chart=not no_chart, html_report=not no_html, as_json=as_json,
                       echo=click.echo)
    except StrategyFailed as exc:
        click.echo(exc.traceback.rstrip(), err=True)
        click.echo(f"error: {exc} (--keep-going to carry on)", err=True)
        sys.exit(1)
    except (MAOTradeError, ValueError, RuntimeError, OSError) as exc:
        _fail(exc)


@main.command("new-strategy", context_settings=CONTEXT)
@click.argument("name")
@click.option("--out", "out_dir", default=".", show_default=True, type=click.Path(file_okay=False),
              help="Directory to write NAME.py into.")
@click.option("--force", is_flag=True, help="Overwrite an existing file.")
def new_strategy(name, out_dir, force) -> None:
    """Write NAME.py: a commented strategy template (a channel breakout) to edit.

    It backtests as it is on the sample data; the command prints how.
    """
    from maotrade.examples.template import write_template

    try:
        path, class_name = write_template(name, out_dir, force=force)
    except (MAOTradeError, ValueError, OSError) as exc:
        _fail(exc)
    click.echo(f"wrote {path} (class {class_name}); try it:")
    click.echo(f"  maotrade backtest --strategy {path.name}:{class_name} --sample --epic EURUSD")


@main.command(context_settings=CONTEXT)
@click.option("--account", required=True, metavar="ID", help="Account to reconcile.")
@click.option("--adopt", "adopt_id", type=int, metavar="N", help="Make the engine take the broker's view of difference N.")
@click.option("--ignore", "ignore_id", type=int, metavar="N", help="Close difference N without changing anything.")
@click.option("--json", "as_json", is_flag=True, help="Print differences and audit log as JSON.")
@data_dir_option
def reconcile(account, adopt_id, ignore_id, as_json, data_dir) -> None:
    """Show where engine and broker disagree on ACCOUNT, and adopt or ignore a difference.

    Every action is written to the audit log with who took it.
    """
    import getpass

    client, _ = _engine_client(_data_dir(data_dir))
    client.name = f"cli:{getpass.getuser()}"  # the audit log records who acted
    try:
        client.hello(timeout=10)
        if adopt_id is not None or ignore_id is not None:
            action, ident = ("adopt", adopt_id) if adopt_id is not None else ("ignore", ignore_id)
            done = client.request(from_client.ReconcileAction(account=account, id=ident, action=action),
                                  to_client.Reconciled.TYPE, timeout=10)["discrepancy"]
            click.echo(f"difference {done['id']} ({done['kind']} {done['key']}): {action}ed")
        answer = client.request(from_client.ReconcileRequest(account=account), to_client.Reconcile.TYPE,
                                timeout=10)
    except MAOTradeError as exc:
        _fail(exc)
    finally:
        client.close()
    if as_json:
        click.echo(json.dumps({"discrepancies": answer["discrepancies"], "audit": answer["audit"]}, indent=2))
        return
    if not answer["discrepancies"]:
        click.echo(f"account {account}: engine and broker agree")
    for item in answer["discrepancies"]:
        click.echo(f"[{item['id']}] {item['kind']} {item['key']}: engine {item['engine']}  broker {item['broker']}")
    for entry in answer["audit"][-10:]:
        click.echo(f"audit {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(entry['time'] / 1000))} "
                   f"{entry['action']} {json.dumps(entry['detail'], sort_keys=True)}")


# -- many accounts ------------------------------------------------------------------------------
def _pool_accounts(data_dir, accounts, all_accounts):
    running = [str(a) for a in _engine_info(data_dir).get("accounts", [])]
    if all_accounts or not accounts:
        return running
    unknown = [a for a in accounts if a not in running]
    if unknown:
        _fail(f"account(s) {', '.join(unknown)} not run by the engine on {data_dir} (it runs {', '.join(running)})")
    return list(accounts)


def _pool_call(data_dir, accounts, call):
    import asyncio

    from maotrade.pool import AccountPool

    async def run():
        async with AccountPool(accounts, data_dir=data_dir, timeout=10) as pool:
            return await call(pool)
    try:
        return asyncio.run(run())
    except MAOTradeError as exc:
        _fail(exc)


def _print_failures(results) -> bool:
    failed = [r for r in results if not r.success]
    for r in failed:
        click.echo(f"account {r.account_id}: FAILED: {r.error}", err=True)
    return bool(failed)


account_options = [
    click.option("--account", "accounts", multiple=True, metavar="ID", help="Account (repeatable)."),
    click.option("--all", "all_accounts", is_flag=True, help="Every account the engine runs (the default)."),
    click.option("--json", "as_json", is_flag=True, help="Print the per-account results as JSON."),
]


def _with_account_options(fn):
    for option in reversed(account_options):
        fn = option(fn)
    return fn


def _as_json(results) -> None:
    click.echo(json.dumps([{"account_id": r.account_id, "success": r.success, "result": r.result,
                            "error": r.error} for r in results], indent=2, sort_keys=True))


@main.command(context_settings=CONTEXT)
@_with_account_options
@data_dir_option
def positions(accounts, all_accounts, as_json, data_dir) -> None:
    """Positions of several accounts at once, and their sum per instrument."""
    path = _data_dir(data_dir)
    results = _pool_call(path, _pool_accounts(path, accounts, all_accounts), lambda p: p.get_positions_parallel())
    if as_json:
        _as_json(results)
    else:
        total: dict = {}
        for r in results:
            if not r.success:
                continue
            held = [p for p in r.result if p["qty"]]
            click.echo(f"account {r.account_id}: {len(held)} open position(s)")
            for p in held:
                click.echo(f"  {p['epic']:<10} {p['qty']:>12g} @ {p['avg_price']:<12.6g} "
                           f"open P&L {p['unrealized_pnl']:>12,.2f}  realized {p['realized_pnl']:>12,.2f}")
                total[p["epic"]] = total.get(p["epic"], 0.0) + p["qty"]
        if len(results) > 1 and total:
            click.echo("all accounts: " + ", ".join(f"{e} {q:g}" for e, q in sorted(total.items())))
    sys.exit(1 if _print_failures(results) else 0)


@main.command(context_settings=CONTEXT)
@_with_account_options
@click.option("--epic", help="Only this instrument.")
@click.option("--status", type=click.Choice(["NEW", "SUBMITTED", "ACCEPTED", "PARTIALLY_FILLED", "FILLED",
                                             "CANCELLED", "REJECTED", "EXPIRED"]), help="Only this status.")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 5000), help="Orders per account.")
@data_dir_option
def orders(accounts, all_accounts, as_json, epic, status, limit, data_dir) -> None:
    """Journaled orders of several accounts at once, newest first."""
    path = _data_dir(data_dir)
    results = _pool_call(path, _pool_accounts(path, accounts, all_accounts),
                         lambda p: p.get_orders_parallel(epic=epic, status=status, limit=limit))
    if as_json:
        _as_json(results)
    else:
        for r in results:
            if not r.success:
                continue
            click.echo(f"account {r.account_id}: {len(r.result)} order(s)")
            for o in r.result:
                code = f" ({o['reason']})" if o.get("reason") else ""
                click.echo(f"  {o['client_order_id']:<30} {o['qty']:>10g} {o['epic']:<10} {o['order_type']:<6} "
                           f"{o['status']:<16} {o['source']:<8}{code}")
    sys.exit(1 if _print_failures(results) else 0)


@main.command(context_settings=CONTEXT)
@_with_account_options
@data_dir_option
def balances(accounts, all_accounts, as_json, data_dir) -> None:
    """Balance, equity and available funds of several accounts at once."""
    path = _data_dir(data_dir)
    results = _pool_call(path, _pool_accounts(path, accounts, all_accounts), lambda p: p.get_balances_parallel())
    if as_json:
        _as_json(results)
    else:
        for r in results:
            if r.success:
                b = r.result
                click.echo(f"account {r.account_id}: balance {b['balance'] or 0:,.2f} {b['currency'] or ''}  "
                           f"equity {b['equity'] or 0:,.2f}  available {b['available'] or 0:,.2f}")
    sys.exit(1 if _print_failures(results) else 0)


@main.command(context_settings=CONTEXT)
@click.argument("mode", type=click.Choice(["active", "reduce_only", "halted"]))
@click.option("--account", help="Only this account (default: every account, the global switch).")
@data_dir_option
def kill(mode, account, data_dir) -> None:
    """Set the kill switch: halted (no new orders), reduce_only (only reducing orders) or active.

    Takes effect from the engine's next order on; working orders are left as they are.
    """
    client, _ = _engine_client(_data_dir(data_dir))
    try:
        risk = client.request(from_client.KillSwitch(mode=mode, account=account or None), to_client.Risk.TYPE,
                              timeout=5)["risk"]
    except MAOTradeError as exc:
        _fail(exc)
    finally:
        client.close()
    switch = risk["kill_switch"]
    click.echo(f"kill switch: global {switch['global']}; " +
               ", ".join(f"account {a} {m}" for a, m in sorted(switch["accounts"].items())))


def _operator_action(action: type, account: Optional[str], data_dir) -> dict:
    client, _ = _engine_client(_data_dir(data_dir))
    try:
        return client.request(action(account=account or None), to_client.OperatorAction.TYPE, timeout=10)
    except MAOTradeError as exc:
        _fail(exc)
    finally:
        client.close()


def _print_action(result: dict) -> None:
    for item in result["cancelled"]:
        click.echo(f"cancel sent: account {item['account']} order {item['client_order_id']}")
    for item in result["closing"]:
        click.echo(f"closing: account {item['account']} {item['epic']} qty {item['qty']:g} "
                   f"(order {item['client_order_id']})")
    for item in result["refused"]:
        what = item.get("epic") or item.get("client_order_id")
        click.echo(f"NOT done: account {item['account']} {what}: {item['reason']}")
    click.echo(f"{len(result['cancelled'])} cancel(s) sent, {len(result['closing'])} closing order(s), "
               f"{len(result['refused'])} refused" +
               (f"; kill switch now {result['kill_switch']}" if result.get("kill_switch") else ""))


@main.command("cancel-all", context_settings=CONTEXT)
@click.option("--account", help="Only this account (default: every account).")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@data_dir_option
def cancel_all(account, yes, data_dir) -> None:
    """Cancel every working order (of one account, or of all).

    Prints each cancel sent; the broker's answers arrive as order updates (see `maotrade orders`).
    Exits 1 if any cancel was refused.
    """
    scope = f"account {account}" if account else "EVERY account"
    if not yes:
        click.confirm(f"Cancel all working orders of {scope}?", abort=True)
    result = _operator_action(from_client.CancelAll, account, data_dir)
    _print_action(result)
    sys.exit(1 if result["refused"] else 0)


@main.command(context_settings=CONTEXT)
@click.option("--account", help="Only this account (default: every account).")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@data_dir_option
def flatten(account, yes, data_dir) -> None:
    """Cancel every working order and close every position at market (of one account, or of all).

    Sets the kill switch of that scope to reduce_only first, so nothing new opens; set it back
    with `maotrade kill active [--account ID]`. Exits 1 if anything could not be cancelled or closed.
    """
    scope = f"account {account}" if account else "EVERY account"
    if not yes:
        click.confirm(f"Cancel all orders and close all positions of {scope} at market?", abort=True)
    result = _operator_action(from_client.Flatten, account, data_dir)
    _print_action(result)
    sys.exit(1 if result["refused"] else 0)


@main.command(context_settings=CONTEXT)
@click.option("--json", "as_json", is_flag=True, help="Print everything as JSON.")
@data_dir_option
def risk(as_json, data_dir) -> None:
    """Risk limits in force, kill switch modes, today's P&L and refused orders by reason."""
    client, _ = _engine_client(_data_dir(data_dir))
    try:
        answer = client.request(from_client.RiskStatus(), to_client.Risk.TYPE, timeout=5)["risk"]
    except MAOTradeError as exc:
        _fail(exc)
    finally:
        client.close()
    if as_json:
        click.echo(json.dumps(answer, indent=2, sort_keys=True))
        return
    click.echo(f"kill switch (global): {answer['kill_switch']['global']}")
    click.echo(f"limits across all accounts: {json.dumps(answer['global'], sort_keys=True)}")
    for account, limits in sorted(answer["accounts"].items()):
        pnl = answer["daily_pnl"].get(account)
        click.echo(f"account {account}: {answer['kill_switch']['accounts'][account]}  today's P&L "
                   f"{pnl if pnl is not None else 0:,.2f}  limits {json.dumps(limits, sort_keys=True)}")
        refused = answer["refused"].get(account)
        if refused:
            click.echo("  refused: " + ", ".join(f"{code} {n}" for code, n in sorted(refused.items())))
    click.echo(f"orders passed {answer['passed']}, refused by risk {answer['refused_total']}")


@main.group(context_settings=CONTEXT)
def keys() -> None:
    """CurveZMQ keys for clients that connect to the engine over tcp (`start --listen`)."""


@keys.command("add", context_settings=CONTEXT)
@click.argument("name")
@click.option("--public-key", "public_key", type=click.Path(dir_okay=False, exists=True), metavar="FILE",
              help="Authorize this public key file (made by the client with `maotrade keys generate`); "
                   "without it a key pair is made here and its secret half must be copied to the client.")
@data_dir_option
def keys_add(name, public_key, data_dir) -> None:
    """Authorize client NAME (accepted from its next connection, no restart needed)."""
    from engine.curve import add_client, authorize, curve_dir, server_keys

    path = _data_dir(data_dir)
    server_keys(path)
    try:
        if public_key:
            kept = authorize(path, name, public_key)
            click.echo(f"authorized {name}: {kept}")
        else:
            secret = add_client(path, name)
            click.echo(f"client key (keep secret): {secret}")
    except MAOTradeError as exc:
        _fail(exc)
    click.echo(f"engine public key:        {curve_dir(path) / 'server.key'}")


@keys.command("generate", context_settings=CONTEXT)
@click.argument("name")
@click.option("--out", "out_dir", default=".", show_default=True, type=click.Path(file_okay=False),
              help="Folder for NAME.key (public: hand it to the engine's operator) and NAME.key_secret (keep).")
def keys_generate(name, out_dir) -> None:
    """Make a key pair for this client, here; only the public half leaves this host."""
    from engine.curve import generate_pair

    try:
        public, secret = generate_pair(out_dir, name)
    except MAOTradeError as exc:
        _fail(exc)
    click.echo(f"public key (give to the engine's operator: `maotrade keys add {name} --public-key ...`): {public}")
    click.echo(f"secret key (never leaves this host): {secret}")


@keys.command("list", context_settings=CONTEXT)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@data_dir_option
def keys_list(as_json, data_dir) -> None:
    """List the authorized client keys."""
    from engine.curve import list_clients

    clients = list_clients(_data_dir(data_dir))
    if as_json:
        click.echo(json.dumps(clients, indent=2))
        return
    if not clients:
        click.echo("no client keys authorized")
    for client in clients:
        click.echo(f"{client['name']:<24} {client['public_key']}")


@keys.command("remove", context_settings=CONTEXT)
@click.argument("name")
@data_dir_option
def keys_remove(name, data_dir) -> None:
    """Revoke client NAME: refused from its next connection on (no restart needed)."""
    from engine.curve import remove_client

    try:
        remove_client(_data_dir(data_dir), name)
    except MAOTradeError as exc:
        _fail(exc)
    click.echo(f"revoked {name} (a connection it already has stays up until it reconnects or the engine restarts)")


# -- historical data ------------------------------------------------------------------------------
def _progress_bar(total, unit: str):
    """A tqdm bar on stderr (shown only at a terminal), or None when tqdm is not installed."""
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(total=total, unit=unit, unit_scale=True, file=sys.stderr, disable=None)


def _new_report_dir(data_dir, kind: str, target: str):
    """A folder of its own for a run's report under ``<data dir>/reports``: ``KIND-<UTC time>-<class>``
    (with ``-2``, ``-3``... when two runs start in the same second)."""
    from engine.paths import reports_dir

    root = reports_dir(_data_dir(data_dir))
    strategy = target.rpartition(":")[2] or "strategy"
    strategy = "".join(c if c.isalnum() or c in "-_" else "_" for c in strategy)[:60]
    base = f"{kind}-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}-{strategy}"
    for number in range(1, 1000):
        candidate = root / (base if number == 1 else f"{base}-{number}")
        try:
            candidate.mkdir(parents=True)
            return candidate
        except FileExistsError:
            continue
    raise click.ClickException(f"could not make a new report folder under {root}")


def _history_root(data_dir):
    return _data_dir(data_dir) / "history"


def _backtest_bars(data_files, epic, time_frame, timerange, data_account, data_dir) -> list[dict]:
    """The bars a backtest replays: from ``data_files``, or from the history store."""
    from maotrade.backtest import load_bars
    from maotrade.backtest.store import load_stored_bars, parse_timerange, select_timerange

    start, end = parse_timerange(timerange)
    if data_files:
        bars = select_timerange(load_bars(data_files, epic, time_frame), start, end)
        if not bars:
            raise MAOTradeError(f"no bars in the time range {timerange}")
        return bars
    return load_stored_bars(_history_root(data_dir), epic, time_frame, start, end, account=data_account)


@main.command(context_settings=CONTEXT)
@click.option("--account", required=True, metavar="ID", help="Account whose broker supplies the history "
                                                             "(the engine must be running it).")
@click.option("--epic", required=True, help="Instrument (MAOTrade epic; the account's mapping gives the broker's).")
@click.option("--time-frame", required=True, type=click.IntRange(min=1), metavar="SECONDS", help="Bar length.")
@click.option("--from", "from_", required=True, metavar="DATE",
              help="First day (YYYYMMDD, YYYY-MM-DD or ISO 8601 time; UTC).")
@click.option("--to", metavar="DATE", help="Up to, not including, this day [default: now].")
@click.option("--no-progress", is_flag=True, help="Never show the progress bar.")
@data_dir_option
def download(account, epic, time_frame, from_, to, no_progress, data_dir) -> None:
    """Download completed bars from ACCOUNT's broker into the local history store.

    Needs a running engine (`maotrade start --account ID`): the request goes through the
    account's Account Manager, within the broker's own limits (IG's weekly allowance, IB's
    pacing). Only spans not stored yet are fetched; what arrived before a failure is kept,
    so running the command again resumes. See `maotrade data list`.
    """
    from maotrade.backtest.download import completed_end, download as fetch
    from maotrade.backtest.store import HistoryStore, format_ms, parse_day

    try:
        start = parse_day(from_)
        end = completed_end(parse_day(to) if to else int(time.time() * 1000), time_frame)
    except MAOTradeError as exc:
        _fail(exc)
    if end <= start:
        _fail(f"--to ({format_ms(end)}) is not after --from ({format_ms(start)})")
    path = _data_dir(data_dir)
    store = HistoryStore(path / "history")
    missing = store.missing(account, epic, time_frame, start, end)
    if not missing:
        click.echo(f"{epic} {time_frame}s {format_ms(start)} - {format_ms(end)} is already stored")
        return
    client, _ = _engine_client(path)
    client.name = "download"
    span = time_frame * 1000
    total = sum(e - s for s, e in missing) // span
    bar = None if no_progress else _progress_bar(total, "bar")
    shown = {}

    def on_allowance(allowance: dict) -> None:
        text = f"broker history allowance: {allowance.get('remaining')} of {allowance.get('total')} left" + (
            f", resets in {allowance['reset_s'] / 3600:.1f} h" if allowance.get("reset_s") else "")
        if shown.get("text") != text:
            shown["text"] = text
            (bar.write if bar is not None else click.echo)(text)

    try:
        client.hello(timeout=10)
        result = fetch(client, store, account, epic, time_frame, start, end,
                       progress=(lambda ms: bar.update(ms // span)) if bar is not None else None,
                       on_allowance=on_allowance)
    except MAOTradeError as exc:
        _fail(exc)
    finally:
        if bar is not None:
            bar.close()
        client.close()
    click.echo(f"{result.bars} bars of {epic} at {time_frame}s stored in {store.path(account, epic, time_frame)}")
    for error in result.errors:
        click.echo(f"error: not all fetched: {error} (run the command again to resume)", err=True)
    sys.exit(0 if result.complete else 1)


@main.group(context_settings=CONTEXT)
def data() -> None:
    """The local history store that `maotrade download` fills and backtests read."""


@data.command("list", context_settings=CONTEXT)
@click.option("--json", "as_json", is_flag=True, help="Print the series as JSON.")
@data_dir_option
def data_list(as_json, data_dir) -> None:
    """Show every stored series: account, instrument, time frame, bars, first and last bar."""
    from maotrade.backtest.store import HistoryStore, format_ms

    try:
        series = HistoryStore(_history_root(data_dir)).series()
    except MAOTradeError as exc:
        _fail(exc)
    if as_json:
        click.echo(json.dumps([{"account": s.account, "epic": s.epic, "time_frame": s.time_frame,
                                "bars": s.bars, "first": s.first, "last": s.last, "coverage": s.coverage,
                                "path": str(s.path)} for s in series], indent=2))
        return
    if not series:
        click.echo(f"no stored history in {_history_root(data_dir)} (see `maotrade download --help`)")
        return
    click.echo(f"{'account':<12} {'epic':<24} {'tf(s)':>6} {'bars':>9}  {'first bar':<16}  {'last bar':<16}  gaps")
    for s in series:
        first = format_ms(s.first) if s.first is not None else "-"
        last = format_ms(s.last) if s.last is not None else "-"
        click.echo(f"{s.account:<12} {s.epic:<24} {s.time_frame:>6} {s.bars:>9}  {first:<16}  {last:<16}  "
                   f"{max(0, len(s.coverage) - 1)}")


# -- optimisation ---------------------------------------------------------------------------------
@main.command(context_settings=CONTEXT)
@click.option("--strategy", "target", required=True, metavar="MODULE:CLASS",
              help="Strategy class declaring a param_space, e.g. maotrade.examples.ma_cross:MovingAverageCross.")
@click.option("--epic", required=True, help="Instrument the strategy trades.")
@click.option("--time-frame", required=True, type=click.IntRange(min=1), metavar="SECONDS", help="Bar length.")
@click.option("--data", "data_files", multiple=True, metavar="FILE", type=click.Path(dir_okay=False),
              help="OHLCV bars, CSV or Parquet (repeatable); without it, the history store.")
@click.option("--timerange", metavar="YYYYMMDD-YYYYMMDD", help="Only bars in this range (either side may be empty).")
@click.option("--data-account", metavar="ID", help="With the history store: whose download to use.")
@click.option("--space", "names", multiple=True, metavar="NAME",
              help="Parameter to search (repeatable) [default: every one in the strategy's param_space].")
@click.option("--range", "ranges", multiple=True, metavar="NAME=LOW:HIGH[:STEP]",
              help="Search NAME over this range instead of the declared one (or NAME=A,B,C for a choice).")
@click.option("--param", "params", multiple=True, metavar="KEY=VALUE", help="Fixed strategy parameter (repeatable).")
@click.option("--sampler", type=click.Choice(["tpe", "grid"]), default="tpe", show_default=True,
              help="tpe: optuna's Tree-structured Parzen Estimator; grid: every combination.")
@click.option("--trials", default=100, show_default=True, type=click.IntRange(min=1),
              help="TPE: trials to run. Grid: the most points allowed (a larger grid is refused).")
@click.option("--metric", default="sharpe", show_default=True,
              help="Objective: any backtest metric (sharpe, sortino, total_return, profit_factor, win_rate, "
                   "max_drawdown...; drawdowns are minimised, the rest maximised).")
@click.option("--min-trades", default=10, show_default=True, type=click.IntRange(min=0),
              help="A trial with fewer closed trades in sample does not count.")
@click.option("--windows", default=3, show_default=True, type=click.IntRange(min=1),
              help="Walk-forward windows (consecutive equal parts of the data).")
@click.option("--oos", "oos_fraction", default=0.3, show_default=True, type=click.FloatRange(0, 1, min_open=True,
                                                                                              max_open=True),
              help="Fraction of each window kept out of sample (reported, never optimised on).")
@click.option("--seed", default=0, show_default=True, help="TPE seed: the same seed, the same trials.")
@click.option("--batch", default=32, show_default=True, type=click.IntRange(min=1),
              help="Trials proposed at once (fixed, so results do not depend on the number of workers).")
@click.option("--workers", type=click.IntRange(min=1), metavar="N",
              help="Processes on this machine [default: one per core]; 1 runs in this process.")
@click.option("--cluster", metavar="tcp://HOST:PORT",
              help="Run on this Dask scheduler's workers (started with `dask worker tcp://HOST:PORT`).")
@click.option("--initial-balance", default=100_000.0, show_default=True, type=click.FloatRange(min=0, min_open=True),
              help="Starting cash of every backtest.")
@click.option("--commission", default=0.0, show_default=True, type=click.FloatRange(0, 0.1, max_open=True),
              help="Commission per fill as a fraction of notional.")
@click.option("--slippage", default=0.0, show_default=True, type=click.FloatRange(0, 0.1, max_open=True),
              help="Fraction of price lost on market and stop fills.")
@click.option("--out", "out_dir", metavar="DIR", type=click.Path(file_okay=False),
              help="Where trials.csv, optimize.json, importance.png and best/ (the best run's report) go "
                   "[default: a new folder optimize-<UTC time>-<strategy> under <data dir>/reports, where the "
                   "dashboard lists it].")
@click.option("--no-chart", is_flag=True, help="Draw no plots.")
@click.option("--no-progress", is_flag=True, help="Never show the progress bar.")
@click.option("--json", "as_json", is_flag=True, help="Print optimize.json instead of the summary.")
@data_dir_option
def optimize(target, epic, time_frame, data_files, timerange, data_account, names, ranges, params, sampler, trials, metric,
             min_trades, windows, oos_fraction, seed, batch, workers, cluster, initial_balance, commission,
             slippage, out_dir, no_chart, no_progress, as_json, data_dir) -> None:
    """Search a strategy's parameters with optuna over walk-forward backtests.

    Each trial backtests one parameter set on every window's in-sample part (the
    objective is the mean of --metric there) and out-of-sample part (shown beside it: a
    large gap is overfitting). Runs on every core here by default, or across machines on
    a Dask cluster (--cluster). Writes the trials table, a parameter-importance plot and
    the best parameters' full backtest report.
    """
    from engine.loader import load_strategy_class
    from maotrade.optimize.evaluate import Context
    from maotrade.optimize.executors import make_executor
    from maotrade.optimize.report import table_lines, write_all
    from maotrade.optimize.space import narrow, space_of
    from maotrade.optimize.splits import walk_forward
    from maotrade.optimize.study import StudySettings, run_study

    bar = None
    try:
        cls = load_strategy_class(target)
        space = space_of(cls, names)
        for item in ranges:
            space = narrow(space, item)
        bars = _backtest_bars(data_files, epic, time_frame, timerange, data_account, data_dir)
        context = Context(strategy_class=cls, fixed_params=_parse_params(params), bars=bars,
                          windows=walk_forward(len(bars), windows, oos_fraction), epic=epic, time_frame=time_frame,
                          initial_balance=initial_balance, commission=commission, slippage=slippage, metric=metric)
        settings = StudySettings(sampler=sampler, trials=trials, metric=metric, min_trades=min_trades, seed=seed,
                                 batch=batch)
        executor = make_executor(workers, cluster)
        if not as_json:
            click.echo(f"{len(bars)} bars, {windows} walk-forward window(s), {sampler} over "
                       f"{', '.join(space)}; running on {executor.description}")
        if not no_progress and not as_json:
            bar = _progress_bar(trials if sampler == "tpe" else None, "trial")
        try:
            result = run_study(context, space, settings, executor, progress=bar.update if bar else None)
        finally:
            executor.close()
            if bar is not None:
                bar.close()
        written = write_all(result, context, out_dir or _new_report_dir(data_dir, "optimize", target),
                            chart=not no_chart)
    except (MAOTradeError, ValueError) as exc:
        _fail(exc)
    if as_json:
        click.echo(written["json"].read_text())
        return
    for line in table_lines(result):
        click.echo(line)
    for view in result.walk_forward:
        if view["params"] is None:
            click.echo(f"window {view['window']}: no trial counted")
        else:
            click.echo(f"window {view['window']}: best in sample {json.dumps(view['params'], sort_keys=True)}  "
                       f"{metric} {view['in_sample']:.4f} in sample, "
                       f"{view['out_of_sample'] if view['out_of_sample'] is None else round(view['out_of_sample'], 4)}"
                       f" out of sample")
    if result.importance:
        click.echo("importance: " + ", ".join(f"{k} {v:.2f}" for k, v in result.importance.items()))
    click.echo(f"{result.backtests} backtests in {result.elapsed_s:.1f}s ({result.backtests_per_second:.1f}/s)")
    if result.best is None:
        click.echo(f"no trial had {min_trades} or more trades in sample without an error", err=True)
        sys.exit(1)
    click.echo(f"best: trial {result.best.number} {json.dumps(result.best.params, sort_keys=True)}")
    click.echo("wrote " + ", ".join(str(p) for p in written.values()))


# -- admin ---------------------------------------------------------------------------------------
@main.group(context_settings=CONTEXT)
def admin() -> None:
    """The admin/config service and its registry of brokers, accounts and epic mappings.

    Commands act on the registry in --data-dir; `admin serve` serves it over REST.
    """


@admin.command(context_settings=CONTEXT)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8700, show_default=True, help="Port to listen on.")
@click.option("--seed-demo", is_flag=True, help="Seed an empty registry with the demo account 123.")
@click.option("--ssl-certfile", type=click.Path(dir_okay=False), metavar="FILE", help="TLS certificate (PEM).")
@click.option("--ssl-keyfile", type=click.Path(dir_okay=False), metavar="FILE", help="TLS private key (PEM).")
@click.option("--insecure", is_flag=True,
              help="Allow plain HTTP on a non-loopback address (only behind a TLS proxy or on a private network).")
@click.option("--server-name", "server_names", multiple=True, metavar="HOST",
              help="Host name clients use to reach this service (repeatable; checked against Host headers).")
@click.option("--allow-broker-class", "allow_broker_classes", multiple=True, metavar="PATH",
              help="Also accept this brokerClass at registration (package.module.Class or package.module.*).")
@data_dir_option
def serve(host, port, seed_demo, ssl_certfile, ssl_keyfile, insecure, server_names, allow_broker_classes,
          data_dir) -> None:
    """Run the admin/config REST service: reads need the read or admin token, writes the admin token."""
    from engine.admin.server import (check_bind, load_or_create_read_token, load_or_create_token, open_registry,
                                     serve_forever)
    from engine.loader import ALLOW_ENV, allowed_broker_classes
    from engine.runner import seed_if_empty

    path = _data_dir(data_dir)
    try:
        check_bind(host, ssl_certfile, ssl_keyfile, insecure)
        if allow_broker_classes:
            os.environ[ALLOW_ENV] = ",".join(allowed_broker_classes(allow_broker_classes))
        if seed_demo:
            seed_if_empty(path, click.echo)
        token = load_or_create_token(path)
        read_token = load_or_create_read_token(path)
        registry = open_registry(path)
    except MAOTradeError as exc:
        _fail(exc)
    scheme = "https" if ssl_certfile else "http"
    click.echo(f"admin service on {scheme}://{host}:{port} (registry in {path}; admin token in "
               f"{path / 'admin.token'} or MAOTRADE_ADMIN_TOKEN; engines' read token in "
               f"{path / 'config.token'} or MAOTRADE_CONFIG_TOKEN)")
    serve_forever(registry, token, host, port, read_token, ssl_certfile, ssl_keyfile, insecure,
                  tuple(server_names))


def _registry(data_dir):
    from engine.admin.server import open_registry
    return _run_admin(lambda: open_registry(_data_dir(data_dir)))


def _actor() -> str:
    """Who an admin CLI write is recorded as in the audit log."""
    import getpass
    import socket

    return f"cli:{getpass.getuser()}@{socket.gethostname()}"


@admin.command("audit", context_settings=CONTEXT)
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 10_000), help="Entries to show.")
@click.option("--target", default="", metavar="NAME", help="Only writes to this broker, account or account/epic.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@data_dir_option
def admin_audit(limit, target, as_json, data_dir) -> None:
    """Show who changed the registry, what and when (newest first; secrets never shown)."""
    import datetime as dt

    entries = _registry(data_dir).audit_log(limit, target or None)
    if as_json:
        click.echo(json.dumps(entries, indent=2))
        return
    if not entries:
        click.echo("no registry writes recorded")
    for entry in entries:
        when = dt.datetime.fromtimestamp(entry["at_ms"] / 1000, dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
        click.echo(f"{when}  {entry['actor']}  {entry['action']} {entry['target']}  "
                   f"{json.dumps(entry['detail'], sort_keys=True)}")


def _json_option(name: str, help_text: str):
    return click.option("--config", name, default="{}", show_default=True, metavar="JSON", help=help_text)


def _load_json(text: str, what: str) -> dict:
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise click.BadParameter(f"{what} is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise click.BadParameter(f"{what} must be a JSON object")
    return value


def _run_admin(action):
    from engine.admin.store import Conflict, NotFound
    try:
        return action()
    except (NotFound, Conflict, MAOTradeError, ValueError) as exc:
        _fail(str(exc).strip("'\""))


@admin.group(context_settings=CONTEXT)
def broker() -> None:
    """Register brokers (a name, an Account Manager class and its brokerConfig)."""


@broker.command("add", context_settings=CONTEXT)
@click.argument("name")
@click.option("--class", "broker_class", required=True, metavar="PATH",
              help="Account Manager class: module.Class under account_managers (paper.PaperAccountManager) "
                   "or a fully qualified import path allowed by MAOTRADE_ALLOW_BROKER_CLASS.")
@_json_option("config", "brokerConfig as a JSON object.")
@data_dir_option
def broker_add(name, broker_class, config, data_dir) -> None:
    """Register or replace broker NAME."""
    from engine.loader import load_broker_class
    store = _registry(data_dir)
    _run_admin(lambda: load_broker_class(broker_class))
    result = _run_admin(lambda: store.put_broker(name, broker_class, _load_json(config, "--config"), _actor()))
    click.echo(f"broker {result['name']} -> {result['brokerClass']}")


@broker.command("list", context_settings=CONTEXT)
@data_dir_option
def broker_list(data_dir) -> None:
    """List brokers."""
    for item in _registry(data_dir).list_brokers():
        click.echo(f"{item['name']}\t{item['brokerClass']}\t{json.dumps(item['brokerConfig'])}")


@broker.command("remove", context_settings=CONTEXT)
@click.argument("name")
@data_dir_option
def broker_remove(name, data_dir) -> None:
    """Remove broker NAME (no account may use it)."""
    store = _registry(data_dir)
    _run_admin(lambda: store.remove_broker(name, _actor()))
    click.echo(f"broker {name} removed")


@admin.group(context_settings=CONTEXT)
def account() -> None:
    """Register accounts (an id, a broker and its accountConfig; secrets are encrypted)."""


@account.command("add", context_settings=CONTEXT)
@click.argument("account_id")
@click.option("--broker", "broker_name", required=True, help="Registered broker name.")
@_json_option("config", "accountConfig as a JSON object; password, apiKey, secret... are encrypted at rest.")
@data_dir_option
def account_add(account_id, broker_name, config, data_dir) -> None:
    """Register or replace account ACCOUNT_ID."""
    store = _registry(data_dir)
    result = _run_admin(lambda: store.put_account(account_id, broker_name, _load_json(config, "--config"),
                                                       _actor()))
    click.echo(f"account {result['idAccount']} on {result['brokerName']}: {json.dumps(result['accountConfig'])}")


@account.command("list", context_settings=CONTEXT)
@data_dir_option
def account_list(data_dir) -> None:
    """List accounts (secrets shown as ***)."""
    for item in _registry(data_dir).list_accounts():
        click.echo(f"{item['idAccount']}\t{item['brokerName']}\t{json.dumps(item['accountConfig'])}")


@account.command("remove", context_settings=CONTEXT)
@click.argument("account_id")
@data_dir_option
def account_remove(account_id, data_dir) -> None:
    """Remove account ACCOUNT_ID and its mappings."""
    store = _registry(data_dir)
    _run_admin(lambda: store.remove_account(account_id, _actor()))
    click.echo(f"account {account_id} removed")


@account.command("kite-login", context_settings=CONTEXT)
@click.argument("account_id")
@click.option("--request-token", required=True, metavar="TOKEN",
              help="The request_token Kite's login redirect carried (single use, valid a few minutes).")
@click.option("--engine-data-dir", "engine_dirs", multiple=True, metavar="DIR",
              help="Data dir of a running engine that gets its config from this registry over "
                   "--config-url (repeatable); an engine on --data-dir itself needs none.")
@data_dir_option
def account_kite_login(account_id, request_token, engine_dirs, data_dir) -> None:
    """Exchange today's Kite request token of ACCOUNT_ID for an access token; store it encrypted.

    Kite access tokens expire every morning (about 06:00 IST). Log in at
    https://kite.zerodha.com/connect/login?v=3&api_key=YOUR_API_KEY; Kite redirects to your
    app's redirect URL with ?request_token=...; pass that value here. The token is stored
    encrypted in the registry, and a running engine whose token expired picks it up
    within seconds, without a restart.
    """
    from engine.loader import load_broker_class

    path = _data_dir(data_dir)
    store = _registry(data_dir)
    document = _run_admin(lambda: store.document(account_id))
    cls = _run_admin(lambda: load_broker_class(document["brokerClass"]))
    login = getattr(cls, "login_with_request_token", None)
    if login is None:
        _fail(f"account {account_id} is on broker {document['brokerName']} ({document['brokerClass']}), "
              "not a Kite account")
    plain = dict(document, accountConfig=_run_admin(
        lambda: store.box.decrypt_all(document["accountConfig"], str(account_id))))
    session = _run_admin(lambda: login(plain, request_token, [path, *engine_dirs]))
    # The registry encrypts the secrets again, bound to this account, as it stores them.
    config = {**plain["accountConfig"], "access_token": session["access_token"]}
    _run_admin(lambda: store.put_account(account_id, document["brokerName"], config, _actor()))
    click.echo(f"account {account_id}: Kite session of user {session.get('user_id') or '?'} stored encrypted; "
               "valid until about 06:00 IST tomorrow")


@admin.group(context_settings=CONTEXT)
def mapping() -> None:
    """Map MAOTrade instrument codes (epics) to each account's broker codes."""


@mapping.command("set", context_settings=CONTEXT)
@click.argument("account_id")
@click.argument("epic")
@click.argument("epic_broker")
@data_dir_option
def mapping_set(account_id, epic, epic_broker, data_dir) -> None:
    """Map EPIC to EPIC_BROKER for ACCOUNT_ID."""
    store = _registry(data_dir)
    _run_admin(lambda: store.set_mapping(account_id, epic, epic_broker, _actor()))
    click.echo(f"account {account_id}: {epic} -> {epic_broker}")


@mapping.command("list", context_settings=CONTEXT)
@click.argument("account_id")
@data_dir_option
def mapping_list(account_id, data_dir) -> None:
    """List ACCOUNT_ID's mappings."""
    store = _registry(data_dir)
    for epic, epic_broker in _run_admin(lambda: store.mappings(account_id)).items():
        click.echo(f"{epic}\t{epic_broker}")


@mapping.command("remove", context_settings=CONTEXT)
@click.argument("account_id")
@click.argument("epic")
@data_dir_option
def mapping_remove(account_id, epic, data_dir) -> None:
    """Remove ACCOUNT_ID's mapping of EPIC."""
    store = _registry(data_dir)
    _run_admin(lambda: store.remove_mapping(account_id, epic, _actor()))
    click.echo(f"account {account_id}: {epic} unmapped")


if __name__ == "__main__":  # pragma: no cover
    main()
