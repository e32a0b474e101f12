"""Validates a static STAC catalogue offline: every catalog, collection and item reachable
from the given catalog.json against the STAC 1.1.0 core schemas bundled with pystac and the
extension schemas in tests/fixtures/stac-schemas/. Any network access is an error, so a
schema that is not local fails the run instead of being fetched. Prints one line per object
and a JSON summary last; exits 1 on the first invalid object."""
import glob, json, os, socket, sys


def no_network(*args, **kwargs):
    raise RuntimeError(f"network access attempted: {args[:2]}")


socket.socket.connect = no_network
socket.create_connection = no_network
socket.getaddrinfo = no_network

import pystac  # noqa: E402
import pystac.validation as pv  # noqa: E402
from pystac.validation.stac_validator import JsonSchemaSTACValidator  # noqa: E402

here = os.path.dirname(os.path.abspath(__file__))
validator = JsonSchemaSTACValidator()
for path in glob.glob(os.path.join(here, "..", "fixtures", "stac-schemas", "*.json")):
    name, version = os.path.basename(path)[:-5].rsplit("-", 1)
    url = f"https://stac-extensions.github.io/{name}/{version}/schema.json"
    with open(path) as f:
        validator.schema_cache[url] = json.load(f)
pv.set_validator(validator)

catalog = pystac.Catalog.from_file(sys.argv[1])
counts = {"catalogs": 0, "collections": 0, "items": 0}
extensions = set()
def check(obj):
    d = obj.to_dict(include_self_link=False, transform_hrefs=False)
    try:
        schemas = pv.validate_dict(d)
    except pystac.STACValidationError as e:
        detail = "\n  ".join(str(e).splitlines()[:12])
        print(f"INVALID {type(obj).__name__} {obj.id}: {detail}")
        sys.exit(1)
    extensions.update(d.get("stac_extensions", []))
    print(f"valid {type(obj).__name__} {obj.id} ({len(schemas)} schemas)")

for root, children, items in catalog.walk():
    counts["collections" if isinstance(root, pystac.Collection) else "catalogs"] += 1
    check(root)
    for item in items:
        counts["items"] += 1
        check(item)
print(json.dumps({**counts, "extensions": sorted(extensions)}))
