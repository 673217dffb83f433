"""The fleet at the simulator's start: accounts, printers, and a few hours of prior history.

Rather than inventing a plausible "now" state for every printer, each printer is switched on some
time before the start (up to ``config.history_s``; the default six hours lets most printers finish
a job) and the engine runs silently, recording no ground truth, up to the start.
The start state then comes out of the same lifecycle code: runs mid-print, results lingering,
printers offline, cartridges low, and history in ``/prints`` and ``/events`` — all consistent.
"""

from __future__ import annotations

from printfleet.simulator.engine import Engine
from printfleet.simulator.rng import Rng, derive_seed


def populate(engine: Engine, t0: int) -> None:
    """Create every account and printer from the config and bring the fleet to ``t0``."""
    config = engine.config
    rng = Rng(derive_seed(config.seed, "population"))
    plan = (
        ("formlabs", config.formlabs_printers, config.formlabs_accounts),
        ("carbon", config.carbon_printers, config.carbon_accounts),
    )
    engine.recording = False
    for vendor, count, account_count in plan:
        if vendor not in config.vendors:
            continue
        accounts = [engine.factory.account(vendor, i, t0) for i in range(account_count)]
        engine.accounts[vendor] = accounts
        for i in range(count):
            start = t0 - rng.randint(config.history_s // 12, config.history_s)
            engine.register(engine.factory.printer(accounts[i % account_count], start), start)
        if vendor == "formlabs":
            for account in accounts:
                for _ in range(max(1, len(account.printers) // 10)):
                    account.tanks.append(engine.factory.spare_tank(account, t0))
    engine.advance_to(t0)
    engine.recording = True
    if config.churn:
        engine.enable_churn()
