"""Making fleet objects: accounts with credentials, printers, consumables and print jobs.

Identity and static attributes only; what happens to them over time is the engine's business.
Every value comes from a seeded stream, so the same seed builds the same fleet.
"""

from __future__ import annotations

import itertools

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from printfleet.simulator import catalog, queues
from printfleet.simulator.config import SimulatorConfig
from printfleet.simulator.fleet import Account, Cartridge, Group, Printer, Run, Tank, User
from printfleet.simulator.lifecycle import print_duration
from printfleet.simulator.rng import Rng, derive_seed

DAY = 86400


def _weighted(rng: Rng, table: tuple[tuple[catalog.Model, float], ...]) -> catalog.Model:
    roll = rng.random() * sum(weight for _, weight in table)
    for model, weight in table:
        roll -= weight
        if roll < 0:
            return model
    return table[-1][0]


def _group(groups: list[Group], rng: Rng, shape: Rng, ungrouped_share: float) -> Group | None:
    """The printer's group, or None on ``ungrouped_share`` of printers (drawn from ``shape``).

    The draws from the printer's own stream stay as they always were (a group on 95 % of
    printers), so the printer's history does not depend on the share."""
    drawn = rng.choice(groups) if rng.chance(0.95) else None
    if shape.chance(ungrouped_share) or not groups:
        return None
    return drawn or shape.choice(groups)


def _lot(prefix: str, rng: Rng) -> str:
    return f"{prefix}{rng.randint(23, 25)}-{rng.randint(101, 1231):04d}-{rng.randint(1, 20):02d}"


class Factory:
    """Builds accounts, printers, consumables and jobs with realistic, seed-determined values."""

    def __init__(self, config: SimulatorConfig) -> None:
        self._config = config
        self._salt = derive_seed(config.seed, "serials") % 1_000_000
        self._rng = Rng(derive_seed(config.seed, "factory"))
        self._printer_index = {"formlabs": itertools.count(), "carbon": itertools.count()}
        self._consumable_index = itertools.count()
        self._run_index = itertools.count(1)
        self._key = itertools.count()

    # --- accounts -------------------------------------------------------------------------------

    def account(self, vendor: str, index: int, now: int) -> Account:
        """A vendor account with fresh credentials (Carbon: an RSA key pair per account)."""
        rng = Rng(derive_seed(self._config.seed, "account", vendor, index))
        name = f"{vendor}-{index + 1}"
        if vendor == "formlabs":
            account = Account(vendor, name, rng.token(24), rng.token(40))
            account.users = [User(*u) for u in catalog.USERS]
            account.groups = [
                Group(rng.uuid4(), group_name, now - rng.randint(30 * DAY, 400 * DAY), i == 0)
                for i, group_name in enumerate(catalog.GROUP_NAMES[:3])
            ]
            queues.seed(account, Rng(derive_seed(self._config.seed, "queue", vendor, index)), now)
            return account
        # Carbon keeps no copy of the secret; playing Carbon, the simulator keeps the public half.
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        private_pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode()
        public_pem = key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        account = Account(vendor, name, rng.uuid4(), private_pem, public_pem)
        account.users = [User(*u) for u in catalog.USERS]
        return account

    # --- printers -------------------------------------------------------------------------------

    def printer(self, account: Account, registered_at: int) -> Printer:
        """A new printer for ``account``; Formlabs printers come with a tank and cartridge(s)."""
        vendor = account.vendor
        index = next(self._printer_index[vendor])
        key = next(self._key)
        rng = Rng(derive_seed(self._config.seed, "printer", vendor, index))
        hb_phase = rng.randint(0, self._config.heartbeat_s - 1)
        if vendor == "carbon":
            model = _weighted(rng, catalog.CARBON_MODELS)
            name = f"{model.code[0]}{1000 + index}"
            alias = f"{model.label} {index + 1}" if rng.chance(0.7) else None
            printer = Printer(
                key=key,
                vendor=vendor,
                account=account,
                serial=catalog.carbon_serial(index, self._salt),
                name=name,
                alias=alias,
                model=model,
                material=rng.choice(catalog.CARBON_RESINS),
                material_name="",
                location=None,
                group=None,
                hb_phase=hb_phase,
                rng=rng,
            )
            printer.changed_at = registered_at
            return printer
        model = _weighted(rng, catalog.FORMLABS_MODELS)
        material, material_name = rng.choice(catalog.FORMLABS_MATERIALS)
        serial = catalog.formlabs_serial(index, self._salt)
        # Wire-shape draws come from their own stream, so the shares never change the history.
        shape = Rng(derive_seed(self._config.seed, "shape", vendor, index))
        printer = Printer(
            key=key,
            vendor=vendor,
            account=account,
            serial=serial,
            name=serial,
            alias=f"{model.label} #{index + 1}" if rng.chance(0.95) else None,
            model=model,
            material=material,
            material_name=material_name,
            location=rng.choice(catalog.LOCATIONS),
            group=_group(account.groups, rng, shape, self._config.formlabs_ungrouped_share),
            hb_phase=hb_phase,
            rng=rng,
        )
        printer.changed_at = registered_at
        printer.cartridge_list = not model.dual_cartridge and shape.chance(
            self._config.formlabs_cartridge_list_share
        )
        slots: tuple[str | None, ...] = ("FRONT", "BACK") if model.dual_cartridge else (None,)
        for slot in slots:
            cartridge = self.cartridge(printer, registered_at, slot)
            cartridge.volume_dispensed_ml = round(rng.uniform(0.0, 800.0), 1)
            printer.cartridges.append(cartridge)
            account.cartridges.append(cartridge)
        tank = self.tank(printer, registered_at)
        printer.tank = tank
        account.tanks.append(tank)
        return printer

    # --- consumables ----------------------------------------------------------------------------

    def cartridge(self, printer: Printer, now: int, slot: str | None) -> Cartridge:
        """A new, full cartridge of the printer's material, installed in ``slot``."""
        rng = self._rng
        made = now - rng.randint(20 * DAY, 200 * DAY)
        return Cartridge(
            serial=catalog.consumable_serial("CRT", next(self._consumable_index), self._salt),
            material=printer.material,
            display_name=printer.material_name,
            machine_type_id=printer.model.code,
            manufacture_date=made - made % DAY,
            lot_number=_lot("C", rng),
            mechanical_version=str(rng.randint(3, 4)),
            created_at=now,
            connected_group=printer.group.id if printer.group else None,
            inside_printer=printer.serial,
            slot=slot,
            last_modified=now,
        )

    def tank(self, printer: Printer, now: int) -> Tank:
        """A resin tank already part-way through its life."""
        rng = self._rng
        made = now - rng.randint(60 * DAY, 400 * DAY)
        layers = rng.randint(0, 60_000)
        return Tank(
            serial=catalog.consumable_serial("TNK", next(self._consumable_index), self._salt),
            material=printer.material,
            display_name=printer.material_name,
            tank_type=printer.model.tank_type,
            manufacture_date=made - made % DAY,
            lot_number=_lot("T", rng),
            mechanical_version=str(rng.randint(1, 2)),
            created_at=now - rng.randint(1 * DAY, 50 * DAY),
            connected_group=printer.group.id if printer.group else None,
            inside_printer=printer.serial,
            layers_printed=layers,
            print_time_ms=layers * rng.randint(7_000, 12_000),
            first_fill_date=now - rng.randint(1 * DAY, 50 * DAY),
            write_count=layers // 60 + 1,
            last_modified=now,
            has_gif=rng.chance(0.8),
        )

    def spare_tank(self, account: Account, now: int) -> Tank:
        """An unused tank on the shelf (in no printer), like the samples' fourth tank."""
        made = now - self._rng.randint(5 * DAY, 60 * DAY)
        return Tank(
            serial=catalog.consumable_serial("TNK", next(self._consumable_index), self._salt),
            material=None,
            display_name="",
            tank_type=self._rng.choice(("FORM4_RESIN_TANK", "FORM3_RESIN_TANK")),
            manufacture_date=made - made % DAY,
            lot_number=f"T25-{self._rng.randint(101, 1231):04d}-03",
            mechanical_version="2",
            created_at=now,
            connected_group=account.groups[0].id if account.groups else None,
            last_modified=now,
            has_gif=False,
        )

    # --- jobs -----------------------------------------------------------------------------------

    def run(self, printer: Printer, now: int) -> Run:
        """A new job for ``printer``, queued at ``now``; its timeline is planned when it starts."""
        rng = printer.rng
        seq = next(self._run_index)
        model = printer.model
        print_s = print_duration(rng)
        layer_count = max(50, int(print_s / rng.uniform(*model.seconds_per_layer)))
        if printer.vendor == "carbon":
            thickness = 0.1
            volume = round(rng.uniform(80.0, 700.0), 1)
            preprint = rng.randint(120, 600)
            suffix = "-" + f"{rng.randint(1, 40):02d}" if rng.chance(0.2) else ""
            build_uuid = rng.uuid4() + suffix
        else:
            thickness = rng.choice((0.025, 0.05, 0.05, 0.1))
            scale = 3.0 if model.dual_cartridge else 1.0
            volume = round(min(450.0, rng.uniform(5.0, 60.0) * scale * print_s / 3600), 1)
            preprint = rng.randint(90, 420)
            build_uuid = rng.uuid4()
        base = rng.choice(catalog.JOB_NAMES)
        name = (
            f"{base}_v{rng.randint(1, 9)}" if rng.chance(0.5) else f"{base}_x{rng.randint(2, 40)}"
        )
        letters = "".join(rng.choice("ABCDEFGHJKLMNPRSTUVWXYZ") for _ in range(2))
        run = Run(
            seq=seq,
            guid=rng.uuid4(),
            print_id=catalog.carbon_print_id(seq, self._salt, letters),
            build_uuid=build_uuid,
            name=name,
            printer_serial=printer.serial,
            machine_type_id=model.code,
            material=printer.material,
            material_name=printer.material_name,
            layer_count=layer_count,
            layer_thickness_mm=thickness,
            volume_ml=max(1.0, volume),
            preprint_s=preprint,
            print_s=print_s,
            postcoat_s=rng.randint(60, 180) if model.extra_phases else 0,
            user=rng.choice(printer.account.users) if printer.account.users else _NOBODY,
            group=printer.group,
            firmware=model.firmware,
            tank=None,
            cartridges=(),
            dual=model.dual_cartridge,
            created_at=now,
        )
        if printer.vendor == "formlabs":
            shape = Rng(derive_seed(self._config.seed, "shape", run.guid))
            run.legacy = shape.chance(self._config.formlabs_legacy_share)
            if shape.chance(self._config.formlabs_note_share):
                run.note = shape.choice(catalog.FORMLABS_NOTES)
                run.note_delay_s = shape.randint(300, 2 * 3600)
        return run


_NOBODY = User(0, "operator", "", "")
