"""Publishes N tile messages for images already ingested (tile keys are content hashes, so
they are computed from the local files), repeating the images under new tile ids, so a
benchmark can fill the featurize queue without uploading anything again.

usage: publish_tiles.py AMQP_URI DATASET N IMAGE...
"""
import hashlib
import json
import sys
import time

import pika

uri, dataset, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
tiles = []
for p in sys.argv[4:]:
    sha = hashlib.sha256(open(p, "rb").read()).hexdigest()
    tiles.append((f"tiles/{sha[:2]}/{sha}.{p.rsplit('.', 1)[-1].lower()}", sha))
conn = pika.BlockingConnection(pika.URLParameters(uri))
ch = conn.channel()
ch.confirm_delivery()
# stamped like every message our own publishers send (featurize uses the stamp to decide
# whether its index of featurized tiles may be out of date)
props = pika.BasicProperties(delivery_mode=2, content_type="application/json",
                             timestamp=int(time.time()))
for i in range(n):
    key, sha = tiles[i % len(tiles)]
    msg = {"schema_version": 1, "dataset": dataset, "tile_id": f"bench-{i:06d}", "key": key,
           "sha256": sha, "backbone": "mobilenet_v2"}
    ch.basic_publish("aerial.work", "featurize.tiles", json.dumps(msg), props, mandatory=True)
conn.close()
