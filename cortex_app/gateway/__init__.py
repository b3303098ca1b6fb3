"""The OpenAI-compatible gateway on the console's port (/v1/*): inference keys, routing by
served name to running, healthy models, streaming pass-through, usage metering. It never
starts a model: a stopped one is refused with a message that an admin must start it."""
