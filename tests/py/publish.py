"""Publishes one JSON message with pika, as a user's own tool would (no aerial code involved).

usage: publish.py AMQP_URI EXCHANGE ROUTING_KEY JSON
"""
import sys

import pika

uri, exchange, routing_key, body = sys.argv[1:5]
conn = pika.BlockingConnection(pika.URLParameters(uri))
ch = conn.channel()
ch.confirm_delivery()  # raises if the broker does not confirm
ch.basic_publish(
    exchange=exchange,
    routing_key=routing_key,
    body=body.encode(),
    properties=pika.BasicProperties(delivery_mode=2, content_type="application/json"),
    mandatory=True,
)
conn.close()
print("published")
