"""The durable broker: a store behind a narrow seam, and the journal that feeds it.

``store`` states the contract every store keeps; ``sqlite_store`` is the default store;
``rows`` turns task records into rows and back; ``journal`` batches the core's changes once per
event-loop turn and writes them on one thread; ``datadir`` owns the data directory and its lock;
``check`` verifies a data directory offline.
"""
