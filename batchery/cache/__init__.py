"""The result cache: work already done is never done again, and identical work in flight is done once."""

from batchery.cache.claims import Claim, ResultCache
from batchery.cache.digest import cache_key

__all__ = ["Claim", "ResultCache", "cache_key"]
