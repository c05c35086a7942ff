"""Machine output: value-token amounts in logs as exact decimal strings, alert details as JSON values."""

from __future__ import annotations

import io
import json
from decimal import Decimal, localcontext

from hypothesis import given
from hypothesis import strategies as st

from keeper.alerts import json_details
from keeper.log import amount_text, configure_logging, get_logger, register_secret


@given(st.integers(-(10**40), 10**40))
def test_amount_text_is_exact(wad):
    text = amount_text(wad)
    with localcontext() as ctx:
        ctx.prec = 100
        assert Decimal(text) * 10**18 == wad and "e" not in text.lower()
    assert not (("." in text) and text.endswith("0"))


def test_json_logs_render_value_amounts_as_token_unit_strings_and_keep_gas_in_integers():
    out = io.StringIO()
    configure_logging("info", "json", stream=out)
    get_logger().info(
        "liquidation_sent",
        expected_reward=12_500_000_000_000_000_000,
        est_cost=1,
        gas=450_000,
        fee_per_gas=10**9,
        account="0xabc",
    )
    line = json.loads(out.getvalue().splitlines()[-1])
    assert line["expected_reward"] == "12.5" and line["est_cost"] == "0.000000000000000001"
    assert line["gas"] == 450_000 and line["fee_per_gas"] == 10**9 and line["account"] == "0xabc"


def test_alert_details_are_json_values_and_scrubbed():
    register_secret("s3cret-token-value")
    details = json_details(
        {"head": {"ok": False, "age_seconds": 61.5}, "balance_wei": 3 * 10**18, "url": "http://x/s3cret-token-value"}
    )
    assert details["head"] == {"ok": False, "age_seconds": 61.5}
    assert details["balance_wei"] == str(3 * 10**18)  # beyond 2**53: a string, every digit kept
    assert "s3cret-token-value" not in json.dumps(details)
