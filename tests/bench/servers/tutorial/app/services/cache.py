import redis
import json
import hashlib
from typing import Optional
from app.core.config import get_settings

settings = get_settings()

class CacheService:
    def __init__(self):
        self.redis_client = redis.Redis(
            host=settings.REDIS_HOST,
            port=settings.REDIS_PORT,
            db=settings.REDIS_DB,
            decode_responses=True
        )

    def _generate_key(self, features: list) -> str:
        """Generate cache key from features"""
        features_str = json.dumps(features, sort_keys=True)
        return f"prediction:{hashlib.md5(features_str.encode()).hexdigest()}"

    def get(self, features: list) -> Optional[float]:
        """Get cached prediction"""
        key = self._generate_key(features)
        cached = self.redis_client.get(key)
        return float(cached) if cached else None

    def set(self, features: list, prediction: float):
        """Cache prediction"""
        key = self._generate_key(features)
        self.redis_client.setex(key, settings.CACHE_TTL, str(prediction))

    def clear(self):
        """Clear all cached predictions"""
        keys = self.redis_client.keys("prediction:*")
        if keys:
            self.redis_client.delete(*keys)

cache_service = CacheService()
