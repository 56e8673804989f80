from pydantic import BaseModel, Field
from typing import List

class PredictionRequest(BaseModel):
    features: List[float] = Field(
        ...,
        description="Input features for prediction",
        min_items=1,
        max_items=100
    )

    class Config:
        json_schema_extra = {
            "example": {
                "features": [1.0, 2.0, 3.0, 4.0, 5.0]
            }
        }

class BatchPredictionRequest(BaseModel):
    requests: List[PredictionRequest] = Field(
        ...,
        max_items=100
    )
