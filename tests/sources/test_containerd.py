"""The containerd layer store against an in-process fake gRPC server: snapshot usage, namespaces."""

from tests.fake_grpc import source_for


def test_native_calls_carry_the_containerd_namespace(fake):
    runtime = source_for(fake, namespace="k8s.io")
    runtime.snapshot()
    assert any(m.get("containerd-namespace") == "k8s.io" for m in fake.metadata)
    runtime.close()


def test_missing_snapshot_is_reported_once_and_the_rest_exported(fake):
    missing = sorted(fake.all_chain_ids())[0]
    fake.missing_snapshots.add(missing)
    runtime = source_for(fake)
    facts = runtime.snapshot()
    assert missing not in facts.layer_usage and len(facts.layer_usage) == 2
    runtime.snapshot()
    assert runtime.errors["snapshot_usage"] == 1
    runtime.close()
