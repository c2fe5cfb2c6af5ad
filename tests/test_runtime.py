"""Safe defaults of the runtime: everything on localhost, a live dashboard."""

from __future__ import annotations

import urllib.request

import psutil
import pytest

from pipeline.runtime import connect, disconnect

pytestmark = pytest.mark.slow


def test_local_cluster_listens_on_localhost_only_and_serves_its_dashboard():
    client = connect(n_workers=2, dashboard_address="127.0.0.1:0")
    try:
        with urllib.request.urlopen(client.dashboard_link, timeout=30) as response:
            assert response.status == 200
        me = psutil.Process()
        processes = [me, *me.children(recursive=True)]
        listening = [c.laddr for p in processes for c in p.net_connections(kind="inet")
                     if c.status == psutil.CONN_LISTEN]
        assert len(listening) >= 5  # scheduler, dashboard, two workers, their nannies
        assert {address.ip for address in listening} == {"127.0.0.1"}
    finally:
        disconnect(client)
