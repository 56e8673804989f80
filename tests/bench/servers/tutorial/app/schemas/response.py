from pydantic import BaseModel
from typing import List, Optional

class PredictionResponse(BaseModel):
    prediction: float
    latency_ms: float
    cached: bool = False
    model_version: str = "1.0.0"

class BatchPredictionResponse(BaseModel):
    predictions: List[PredictionResponse]
    total_latency_ms: float

class HealthResponse(BaseModel):
    status: str
    model_loaded: bool
    version: str

class ErrorResponse(BaseModel):
    error: str
    detail: Optional[str] = None
