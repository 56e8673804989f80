from fastapi import FastAPI, Depends, HTTPException, Request
from fastapi.responses import JSONResponse
from fastapi.middleware.cors import CORSMiddleware
from slowapi import Limiter, _rate_limit_exceeded_handler
from slowapi.util import get_remote_address
from slowapi.errors import RateLimitExceeded
from prometheus_client import Counter, Histogram, generate_latest
import time
import logging

from app.core.config import get_settings
from app.core.security import verify_api_key
from app.services.inference import inference_service
from app.services.cache import cache_service
from app.schemas.request import PredictionRequest, BatchPredictionRequest
from app.schemas.response import (
    PredictionResponse,
    BatchPredictionResponse,
    HealthResponse,
    ErrorResponse
)

# Initialize settings
settings = get_settings()

# Initialize rate limiter
limiter = Limiter(key_func=get_remote_address)

# Initialize FastAPI app
app = FastAPI(
    title=settings.APP_NAME,
    version=settings.APP_VERSION,
    description="Production ML Inference API",
    docs_url="/docs",
    redoc_url="/redoc"
)

# Add rate limiter to app
app.state.limiter = limiter
app.add_exception_handler(RateLimitExceeded, _rate_limit_exceeded_handler)

# CORS middleware
app.add_middleware(
    CORSMiddleware,
    allow_origins=["*"],
    allow_credentials=True,
    allow_methods=["*"],
    allow_headers=["*"],
)

# Prometheus metrics
PREDICTION_COUNT = Counter('predictions_total', 'Total predictions')
PREDICTION_LATENCY = Histogram('prediction_latency_seconds', 'Prediction latency')
CACHE_HITS = Counter('cache_hits_total', 'Total cache hits')
CACHE_MISSES = Counter('cache_misses_total', 'Total cache misses')
ERROR_COUNT = Counter('errors_total', 'Total errors', ['error_type'])

# Configure logging
logging.basicConfig(
    level=logging.INFO,
    format='%(asctime)s - %(name)s - %(levelname)s - %(message)s'
)
logger = logging.getLogger(__name__)

@app.on_event("startup")
async def startup_event():
    """Load model on startup"""
    logger.info("Starting ML Inference API...")
    inference_service.load_model()
    logger.info("Model loaded successfully")

@app.get("/", tags=["Root"])
async def root():
    """API root endpoint"""
    return {
        "service": settings.APP_NAME,
        "version": settings.APP_VERSION,
        "endpoints": {
            "/health": "Health check",
            "/predict": "Single prediction (requires API key)",
            "/batch-predict": "Batch predictions (requires API key)",
            "/metrics": "Prometheus metrics",
            "/docs": "API documentation"
        }
    }

@app.get("/health", response_model=HealthResponse, tags=["Health"])
async def health_check():
    """Health check endpoint"""
    return HealthResponse(
        status="healthy",
        model_loaded=inference_service.model_loaded,
        version=settings.APP_VERSION
    )

@app.post(
    "/predict",
    response_model=PredictionResponse,
    tags=["Predictions"],
    dependencies=[Depends(verify_api_key)]
)
@limiter.limit(f"{settings.RATE_LIMIT_PER_MINUTE}/minute")
async def predict(request: Request, pred_request: PredictionRequest):
    """Make a prediction"""
    start_time = time.time()

    try:
        # Check cache first
        cached_result = cache_service.get(pred_request.features)

        if cached_result is not None:
            CACHE_HITS.inc()
            latency = (time.time() - start_time) * 1000

            return PredictionResponse(
                prediction=cached_result,
                latency_ms=latency,
                cached=True
            )

        # Cache miss - run inference
        CACHE_MISSES.inc()
        prediction = inference_service.predict(pred_request.features)

        # Cache result
        cache_service.set(pred_request.features, prediction)

        # Metrics
        latency = (time.time() - start_time) * 1000
        PREDICTION_COUNT.inc()
        PREDICTION_LATENCY.observe(time.time() - start_time)

        return PredictionResponse(
            prediction=prediction,
            latency_ms=latency,
            cached=False
        )

    except Exception as e:
        ERROR_COUNT.labels(error_type=type(e).__name__).inc()
        logger.error(f"Prediction error: {e}")
        raise HTTPException(status_code=500, detail=str(e))

@app.post(
    "/batch-predict",
    response_model=BatchPredictionResponse,
    tags=["Predictions"],
    dependencies=[Depends(verify_api_key)]
)
@limiter.limit(f"{settings.RATE_LIMIT_PER_MINUTE}/minute")
async def batch_predict(request: Request, batch_request: BatchPredictionRequest):
    """Make batch predictions"""
    start_time = time.time()

    try:
        predictions = []

        for pred_req in batch_request.requests:
            pred_start = time.time()
            prediction = inference_service.predict(pred_req.features)
            pred_latency = (time.time() - pred_start) * 1000

            predictions.append(PredictionResponse(
                prediction=prediction,
                latency_ms=pred_latency,
                cached=False
            ))

            PREDICTION_COUNT.inc()

        total_latency = (time.time() - start_time) * 1000

        return BatchPredictionResponse(
            predictions=predictions,
            total_latency_ms=total_latency
        )

    except Exception as e:
        ERROR_COUNT.labels(error_type=type(e).__name__).inc()
        logger.error(f"Batch prediction error: {e}")
        raise HTTPException(status_code=500, detail=str(e))

@app.get("/metrics", tags=["Monitoring"])
async def metrics():
    """Prometheus metrics endpoint"""
    return JSONResponse(content=generate_latest().decode(), media_type="text/plain")

@app.exception_handler(Exception)
async def global_exception_handler(request: Request, exc: Exception):
    """Global exception handler"""
    ERROR_COUNT.labels(error_type="unhandled").inc()
    logger.error(f"Unhandled exception: {exc}")
    return JSONResponse(
        status_code=500,
        content={"error": "Internal server error", "detail": str(exc)}
    )

if __name__ == "__main__":
    import uvicorn
    uvicorn.run(app, host="0.0.0.0", port=8000)
