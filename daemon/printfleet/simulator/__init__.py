"""A fake Formlabs + Carbon cloud: real HTTP servers over a simulated, deterministic fleet.

Used by the demo, the integration tests and the benchmarks::

    from printfleet.simulator import Simulator, SimulatorConfig

    with Simulator(SimulatorConfig(formlabs_printers=20, carbon_printers=10, seed=1)) as sim:
        sim.formlabs_url, sim.formlabs_client_id, sim.formlabs_client_secret
        sim.carbon_url, sim.carbon_secrets
        sim.faults.formlabs.error_rate = 0.2
        sim.advance_to(sim.now() + timedelta(hours=24))
        sim.ground_truth

It imports nothing from ``printfleet.sources`` or ``printfleet.core``: the vendor vocabulary is
copied from ``shared/api/`` so that an adapter bug cannot be mirrored by the fake. Module map:
``engine`` (lifecycle over time) <- ``lifecycle`` (planning), ``factory`` (new objects),
``population`` (initial fleet); ``formlabs``/``carbon`` (APIs) <- ``*_render`` (wire formats);
``gateway`` (faults, log) and ``server`` (HTTP); ``simulator`` (this facade); ``cli``.
"""

from printfleet.simulator.config import SimulatorConfig
from printfleet.simulator.faults import Faults, OutageWindow, VendorFaults
from printfleet.simulator.gateway import RequestRecord
from printfleet.simulator.simulator import AccountInfo, Simulator
from printfleet.simulator.truth import GroundTruthEvent, TruthKind

__all__ = [
    "AccountInfo",
    "Faults",
    "GroundTruthEvent",
    "OutageWindow",
    "RequestRecord",
    "Simulator",
    "SimulatorConfig",
    "TruthKind",
    "VendorFaults",
]
