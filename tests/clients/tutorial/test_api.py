# The tutorial's tests/test_api.py (../shared/seed, "Part 6: Testing"), run over HTTP against
# Quern by tests/clients/tutorial-contract.test.ts. Changed only where marked "Quern:": the
# client (the tutorial's TestClient is an httpx.Client bound to the app; here an httpx.Client
# bound to Quern's URL, so every call below is the same), the API key, the feature counts for
# Quern's model (cars-mpg takes 6), and one status Quern answers differently on purpose
# (docs/compatibility.md).
import os

import httpx
import pytest

# Quern: was `from fastapi.testclient import TestClient; from app.main import app; client = TestClient(app)`.
client = httpx.Client(base_url=os.environ["QUERN_URL"])
# Quern: was "dev-key-123".
API_KEY = os.environ["QUERN_API_KEY"]

def test_root():
    response = client.get("/")
    assert response.status_code == 200
    assert "service" in response.json()

def test_health():
    response = client.get("/health")
    assert response.status_code == 200
    assert response.json()["status"] == "healthy"

def test_predict_no_api_key():
    response = client.post(
        "/predict",
        json={"features": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]}  # Quern: 6 features, was 3
    )
    # Quern: 401, was 403. A request without credentials is unauthenticated: 401 with a
    # WWW-Authenticate challenge (RFC 9110, 15.5.2); 403 is for a known caller without the right.
    assert response.status_code == 401

def test_predict_with_api_key():
    response = client.post(
        "/predict",
        json={"features": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]},  # Quern: 6 features, was 3
        headers={"X-API-Key": API_KEY}
    )
    assert response.status_code == 200
    assert "prediction" in response.json()
    assert "latency_ms" in response.json()

def test_batch_predict():
    response = client.post(
        "/batch-predict",
        json={
            "requests": [
                {"features": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]},  # Quern: 6 features, was 2
                {"features": [3.0, 4.0, 5.0, 6.0, 7.0, 8.0]}  # Quern: 6 features, was 2
            ]
        },
        headers={"X-API-Key": API_KEY}
    )
    assert response.status_code == 200
    assert len(response.json()["predictions"]) == 2

# Run tests
# pytest tests/test_api.py -v
