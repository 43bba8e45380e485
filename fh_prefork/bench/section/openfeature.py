"""The cost of an OpenFeature resolution against a direct fh_prefork.context() read."""

from __future__ import annotations

import math
import timeit
from collections.abc import Callable

from ..common import (
    API_KEY,
    Bench,
    progress,
    table,
)


def run(b: Bench) -> None:
    """OpenFeature client and provider vs a direct read, same process, interleaved.

    openfeature-sdk is an optional extra: without it the section says so and passes.
    """
    try:
        from openfeature import api
        from openfeature.evaluation_context import EvaluationContext

        from ...openfeature import FeatureHubProvider
    except ImportError:
        note = "n/a: openfeature-sdk is not installed (pip install 'fh-prefork[openfeature]')"
        b.results["openfeature"] = {"rows": [], "note": note}
        b.emit(f"OpenFeature resolution cost\n---------------------------\n{note}\n")
        return
    import fh_prefork

    from ...testing.cluster import wait_until
    from ...testing.edge_simulator import EdgeSimulator, make_feature

    number, repeat = (2000, 3) if b.quick else (50000, 7)
    progress(f"OpenFeature resolution cost: {repeat} x {number} resolutions each, interleaved")
    targeted = make_feature("T", "plain", 1, "STRING")
    targeted["strategies"] = [{"id": "s1", "name": "kiwis", "value": "kiwi", "attributes": [
        {"conditional": "EQUALS", "fieldName": "country", "type": "STRING",
         "values": ["new_zealand"]}]}]
    # four strategies sharing one value, the third matching: naming the strategy applied
    # must not cost a matcher run per strategy
    shared = make_feature("M", "plain", 1, "STRING")
    shared["strategies"] = [{"id": f"m{i}", "name": f"m{i}", "value": "kiwi", "attributes": [
        {"conditional": "EQUALS", "fieldName": "country", "type": "STRING", "values": [c]}]}
        for i, c in enumerate(["australia", "united_kingdom", "new_zealand", "ireland"])]
    with EdgeSimulator(keepalive_interval=1.0) as edge:
        edge.set_features([make_feature("X", True, 1), targeted, shared] +
                          [make_feature(f"F{i:02}", i % 2 == 0, 1) for i in range(48)])
        fh_prefork.configure(edge_url=edge.url, api_key=API_KEY,
                             store=f"file://{b.tmp}/openfeature-store", refresh_seconds=60)
        fh_prefork.start_worker()
        try:
            wait_until(lambda: fh_prefork.context().feature("T").exists, 30,
                       "fh_prefork to receive the features")
            provider = FeatureHubProvider()
            # openfeature-sdk < 0.10 has no set_provider_and_wait: set_provider initialises
            getattr(api, "set_provider_and_wait", api.set_provider)(provider)
            client = api.get_client()
            nz = EvaluationContext("user-1", {"country": "new_zealand"})

            def direct_flag() -> object:
                return fh_prefork.context().feature("X").is_enabled

            def provider_flag() -> object:
                return provider.resolve_boolean_details("X", False).value

            def client_flag() -> object:
                return client.get_boolean_value("X", False)

            def resolvers(key: str) -> dict[str, Callable[[], object]]:
                """The three ways to resolve string feature ``key`` for a New Zealand user."""
                return {
                    "direct": lambda: fh_prefork.context().user_key("user-1").attribute_values(
                        "country", ["new_zealand"]).feature(key).get_string,
                    "provider": lambda: provider.resolve_string_details(key, "d", nz).value,
                    "client": lambda: client.get_string_value(key, "d", nz)}

            fns: dict[str, Callable[[], object]] = {
                "direct_flag": direct_flag, "provider_flag": provider_flag,
                "client_flag": client_flag}
            for case, key in (("targeted", "T"), ("third", "M")):
                fns.update({f"{via}_{case}": fn for via, fn in resolvers(key).items()})
            for name, fn in fns.items():
                want = True if name.endswith("flag") else "kiwi"
                assert fn() == want, f"{name} gave {fn()!r}"
            best = dict.fromkeys(fns, math.inf)
            for _ in range(repeat):
                for name, fn in fns.items():
                    best[name] = min(best[name], timeit.timeit(fn, number=number) / number)
        finally:
            api.shutdown()
            fh_prefork.stop_worker()
    reads = {
        "flag": ("fh_prefork.context().feature('X').is_enabled",
                 "provider.resolve_boolean_details('X', False)",
                 "client.get_boolean_value('X', False)"),
        "targeted": ("fh_prefork.context().user_key(..).attribute_values(..).feature('T')",
                     "provider.resolve_string_details('T', 'd', ctx)",
                     "client.get_string_value('T', 'd', ctx)"),
        "third": (   # the third of four strategies sharing one value matches
            "fh_prefork.context().user_key(..).attribute_values(..).feature('M')",
            "provider.resolve_string_details('M', 'd', ctx)",
            "client.get_string_value('M', 'd', ctx)"),
    }
    rows = []
    for what, (direct, via_provider, via_client) in reads.items():
        base = best[f"direct_{what}"]
        for label, key in ((direct, "direct"), (via_provider, "provider"),
                           (via_client, "client")):
            ns = best[f"{key}_{what}"]
            rows.append({"case": what, "read": label, "ns": round(ns * 1e9),
                         "ratio": round(ns / base, 2)})
    client_ratio = best["client_flag"] / best["direct_flag"]
    provider_ratio = best["provider_flag"] / best["direct_flag"]
    b.results["openfeature"] = {
        "rows": rows, "client_ratio": round(client_ratio, 2),
        "provider_ratio": round(provider_ratio, 2),
        # what a flag read costs on top of a direct read: the provider's part, the SDK's part
        "provider_overhead_ns": round((best["provider_flag"] - best["direct_flag"]) * 1e9),
        "sdk_overhead_ns": round((best["client_flag"] - best["provider_flag"]) * 1e9),
        "number": number, "repeat": repeat}
    b.emit(table(f"OpenFeature resolution cost (best of {repeat} x {number}, same process): "
                 f"client {client_ratio:.1f}x direct, provider alone {provider_ratio:.2f}x",
                 [("case", "case"), ("read", "read"), ("ns per read", "ns"),
                  ("x direct", "ratio")], rows))
