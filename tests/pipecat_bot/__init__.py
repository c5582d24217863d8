"""A real, local, deterministic Pipecat bot for end-to-end tests (``python -m tests.pipecat_bot``).

It runs pipecat-ai's own ``SingleClientWebsocketServerTransport`` with ``ProtobufFrameSerializer``
and RTVI, but every processor in its pipeline is local: no cloud service, no key, no network.
See ``bot.py`` for what it says and does, and what it counts at ``GET /stats``.
"""
