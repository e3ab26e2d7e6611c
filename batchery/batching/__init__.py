"""The dynamic batcher that lives in each worker process."""

from batchery.batching.batcher import Batcher, BatcherStopped
from batchery.batching.hooks import BatchHook, add_hook, remove_hook
from batchery.batching.queue import Item, ItemQueue, QueueClosed
from batchery.batching.ticket import Ticket

__all__ = ["BatchHook", "Batcher", "BatcherStopped", "Item", "ItemQueue", "QueueClosed", "Ticket", "add_hook", "remove_hook"]
