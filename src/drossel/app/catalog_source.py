"""Where the catalog comes from: an operator-installed catalog in the state database (shared by
every node), else the one shipped with this release."""

from __future__ import annotations

import json
from datetime import datetime
from importlib import resources

from drossel.app.storage import StateStore
from drossel.core.catalog import Catalog, CatalogError, catalog_to_dict, parse_catalog

SETTING_KEY = "catalog"


def packaged_catalog() -> Catalog:
    text = resources.files("drossel").joinpath("data/exchange-catalog.json").read_text("utf-8")
    return parse_catalog(text)


def load_catalog(store: StateStore | None) -> Catalog:
    """The installed catalog if there is one and it is not older than the packaged one."""
    shipped = packaged_catalog()
    if store is None:
        return shipped
    text = store.get_setting(SETTING_KEY)
    if text is None:
        return shipped
    try:
        installed = parse_catalog(text)
    except CatalogError:
        return shipped
    return installed if installed.version >= shipped.version else shipped


def install_catalog(
    store: StateStore, text: str | bytes, actor: str, now: datetime, force: bool = False
) -> Catalog:
    """Validate and install a catalog; on any error the current one stays in place."""
    new = parse_catalog(text)
    current = load_catalog(store)
    if new.version < current.version and not force:
        raise CatalogError(
            f"catalog version {new.version} is older than the installed {current.version} "
            "(use --force to install it anyway)"
        )
    store.set_setting(SETTING_KEY, json.dumps(catalog_to_dict(new)), actor, now)
    return new
