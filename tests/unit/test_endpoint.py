import json
import urllib.error
import urllib.request

from vgw.telemetry.endpoint import Health, MetricsEndpoint


def _get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def test_health_readiness_and_metrics() -> None:
    health = Health()
    state = {"nats": False}
    health.add_check("nats", lambda: (state["nats"], "NATS not connected"))
    health.add_check("broken", lambda: (True, "") if state["nats"] else (_ for _ in ()).throw(RuntimeError("boom")))
    ep = MetricsEndpoint("127.0.0.1:0", health).start()
    try:
        assert _get(ep.port, "/healthz")[0] == 200
        code, body = _get(ep.port, "/readyz")
        assert code == 503
        checks = json.loads(body)["checks"]
        assert checks["started"] == "starting" and checks["nats"] == "NATS not connected"
        assert "boom" in checks["broken"]
        health.set_started()
        state["nats"] = True
        assert _get(ep.port, "/readyz")[0] == 200
        health.set_stopping()
        assert _get(ep.port, "/readyz")[0] == 503
        code, text = _get(ep.port, "/metrics")
        assert code == 200 and "python_info" in text
        assert _get(ep.port, "/nope")[0] == 404
    finally:
        ep.stop()
