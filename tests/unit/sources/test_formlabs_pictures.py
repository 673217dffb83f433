"""Formlabs picture links: mapped to Print.thumbnail_url/photo_url, bad ones dropped and counted."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from printfleet.core.codec import snapshot_from_json, snapshot_to_json
from printfleet.core.model import Snapshot, Vendor
from printfleet.sources.formlabs_map import map_print, rejected_pictures

THUMB = "https://cdn.formlabs.example/thumbnails/g.png?Expires=1&Signature=s3cr3t"
PHOTO = "https://cdn.formlabs.example/post-print/g.jpg?Expires=1&Signature=s3cr3t"


def run(**fields: Any) -> dict[str, Any]:
    record: dict[str, Any] = {"guid": "g-1", "name": "bracket", "status": "FINISHED"}
    record.update(fields)
    return record


def test_thumbnail_and_photo_are_mapped() -> None:
    mapped = map_print(run(print_thumbnail={"thumbnail": THUMB}, post_print_photo_url=PHOTO))
    assert (mapped.thumbnail_url, mapped.photo_url) == (THUMB, PHOTO)
    assert mapped.as_dict()["thumbnail_url"] == THUMB
    assert rejected_pictures([mapped]) == {}


def test_links_change_nothing_about_equality() -> None:
    """Signed links change on every fetch; a print with a new link is the same print."""
    one = map_print(run(print_thumbnail={"thumbnail": THUMB}))
    two = map_print(run(print_thumbnail={"thumbnail": THUMB + "x"}))
    assert one == two


def test_missing_null_and_odd_shapes_read_as_no_picture() -> None:
    for fields in (
        {},
        {"print_thumbnail": None, "post_print_photo_url": None},
        {"print_thumbnail": {}, "post_print_photo_url": ""},
        {"print_thumbnail": "https://x.example/a.png"},  # not the documented object
    ):
        mapped = map_print(run(**fields))
        assert (mapped.thumbnail_url, mapped.photo_url) == (None, None)


def test_bad_links_are_dropped_and_counted_by_field_and_reason() -> None:
    runs = [
        map_print(
            run(
                guid=f"g-{i}",
                print_thumbnail={"thumbnail": "http://cdn.formlabs.example/a.png"},
                post_print_photo_url="https://x.example/" + "a" * 5000,
            )
        )
        for i in range(3)
    ]
    assert all(r.thumbnail_url is None and r.photo_url is None for r in runs)
    assert rejected_pictures(runs) == {
        ("print_thumbnail.thumbnail", "not https"): 3,
        ("post_print_photo_url", "too long"): 3,
    }


def test_the_codec_does_not_store_the_links() -> None:
    """Snapshots are stored; expiring links are not (they are fetched again at delivery)."""
    mapped = map_print(run(print_thumbnail={"thumbnail": THUMB}, post_print_photo_url=PHOTO))
    snapshot = Snapshot(
        source="lab",
        vendor=Vendor.FORMLABS,
        taken_at=datetime(2026, 1, 1, tzinfo=UTC),
        printers={},
        runs={mapped.id: mapped},
    )
    encoded = snapshot_to_json(snapshot)  # as the store writes it (without raw)
    assert "s3cr3t" not in str(encoded)
    back = snapshot_from_json(encoded)
    assert back.runs[mapped.id].thumbnail_url is None
