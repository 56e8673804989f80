import onnxruntime as ort
import numpy as np
from typing import List
import logging
from app.core.config import get_settings

logger = logging.getLogger(__name__)
settings = get_settings()

class InferenceService:
    def __init__(self):
        self.session = None
        self.model_loaded = False

    def load_model(self):
        """Load ONNX model"""
        try:
            self.session = ort.InferenceSession(settings.MODEL_PATH)
            # bench: the tutorial hard-codes the input name "input"; cars-mpg's input is
            # "features", so the name is read from the session once, at load.
            self.input_name = self.session.get_inputs()[0].name
            self.model_loaded = True
            logger.info(f"Model loaded from {settings.MODEL_PATH}")
        except Exception as e:
            logger.error(f"Failed to load model: {e}")
            raise

    def predict(self, features: List[float]) -> float:
        """Run inference"""
        if not self.model_loaded:
            raise RuntimeError("Model not loaded")

        try:
            # Prepare input
            input_data = np.array([features], dtype=np.float32)

            # Run inference
            outputs = self.session.run(None, {self.input_name: input_data})
            # bench: cars-mpg answers shape [batch, 1]; NumPy 2 no longer turns the 1-element
            # row outputs[0][0] into a float (the tutorial's float(outputs[0][0])), so index it.
            prediction = float(outputs[0][0][0])

            return prediction

        except Exception as e:
            logger.error(f"Inference error: {e}")
            raise

# Global inference service
inference_service = InferenceService()
