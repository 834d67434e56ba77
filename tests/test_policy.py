"""The source policy: parsing the setting, the lexical check, the real-path confirmation."""

from __future__ import annotations

from pathlib import Path

import pytest

from landmark import config as cfg
from landmark.errors import ConfigError, ForbiddenSourceError, SourceError
from landmark.policy import PARAMETER, SourcePolicy, from_parameters
from landmark.settings import Settings

OUTSIDE = "outside the sources this service may read (LANDMARK_ALLOWED_SOURCES)"


def refusal(policy: SourcePolicy, source: str) -> str:
    with pytest.raises(ForbiddenSourceError) as error:
        policy.check(source)
    return str(error.value)


def test_the_setting_parses_into_roots_and_prefixes() -> None:
    settings = cfg.resolve(Settings, environ={"LANDMARK_ALLOWED_SOURCES": "/srv/photos/, s3://bucket, s3://b2//a/b ,,"})
    policy = settings.source_policy
    assert policy == SourcePolicy(roots=("/srv/photos",), prefixes=("s3://bucket/", "s3://b2/a/b/"))
    assert policy.entries == ["/srv/photos", "s3://bucket/", "s3://b2/a/b/"]
    assert cfg.resolve(Settings, environ={}).source_policy == SourcePolicy()


@pytest.mark.parametrize("entry", ["photos", "./photos", "http://example.com/", "file:///srv", "s3:///key"])
def test_entries_that_are_not_absolute_roots_or_s3_prefixes_are_refused_at_start_up(entry: str) -> None:
    with pytest.raises(ConfigError) as error:
        cfg.resolve(Settings, environ={"LANDMARK_ALLOWED_SOURCES": entry})
    assert str(error.value).startswith("allowed_sources: ") and "LANDMARK_ALLOWED_SOURCES" in str(error.value)


def test_local_sources_are_checked_lexically_after_normalising() -> None:
    policy = SourcePolicy.parse(["/srv/photos"])
    assert policy.check("/srv/photos") == "file:///srv/photos"
    assert policy.check("/srv/photos/a/b.jpg") == "file:///srv/photos/a/b.jpg"
    assert policy.check("file:///srv/photos/x/../c%20d.jpg") == "file:///srv/photos/c%20d.jpg"
    for source in ("/srv/photos/../secret", "/srv/photos2/a.jpg", "/srv", "/etc/passwd", "file:///etc/passwd",
                   "/srv/photos/a/../../photos2/x.jpg", "file:///srv/photos/%2E%2E/secret", "s3://bucket/a.jpg"):
        assert refusal(policy, source) == f"{source}: not allowed: {OUTSIDE}"


def test_s3_sources_must_lie_under_a_prefix_and_hold_no_dot_segments() -> None:
    policy = SourcePolicy.parse(["s3://bucket/photos/", "s3://open"])
    assert policy.check("s3://bucket/photos/a.jpg") == "s3://bucket/photos/a.jpg"
    assert policy.check("s3://bucket/photos") == "s3://bucket/photos"  # the prefix itself, as a folder
    assert policy.check("s3://open") == "s3://open/"
    assert policy.check("s3://open/any/key.jpg") == "s3://open/any/key.jpg"
    for source in ("s3://bucket/photos2/a.jpg", "s3://bucket/a.jpg", "s3://other/photos/a.jpg", "/srv/a.jpg"):
        assert refusal(policy, source) == f"{source}: not allowed: {OUTSIDE}"
    assert refusal(policy, "s3://bucket/photos/../secret.txt") == (
        "s3://bucket/photos/../secret.txt: not allowed: an S3 key may not hold '.' or '..' segments"
    )


def test_an_empty_policy_allows_nothing_and_says_why() -> None:
    assert refusal(SourcePolicy(), "/srv/a.jpg") == (
        "/srv/a.jpg: not allowed: this service reads no sources named in requests "
        "(LANDMARK_ALLOWED_SOURCES is empty)"
    )


def test_the_check_does_not_look_at_the_file_system(tmp_path: Path) -> None:
    """The same answer, word for word but the name, whether the path exists or not."""
    policy = SourcePolicy.parse([str(tmp_path / "allowed")])
    (tmp_path / "there.jpg").write_bytes(b"x")
    there, missing = str(tmp_path / "there.jpg"), str(tmp_path / "missing.jpg")
    assert refusal(policy, there).replace(there, "X") == refusal(policy, missing).replace(missing, "X")


def test_sources_that_are_no_path_or_uri_keep_their_own_error() -> None:
    policy = SourcePolicy.parse(["/srv"])
    with pytest.raises(SourceError) as error:
        policy.check("http://example.com/a.jpg")
    assert not isinstance(error.value, ForbiddenSourceError)
    with pytest.raises(SourceError) as error:
        policy.check("/srv/a\x00.jpg")
    assert str(error.value) == "'/srv/a\\x00.jpg': contains a NUL character"


def test_confirm_follows_links_and_refuses_those_that_leave_the_roots(tmp_path: Path) -> None:
    root, outside = tmp_path / "root", tmp_path / "outside"
    (root / "sub").mkdir(parents=True)
    outside.mkdir()
    (root / "in.jpg").write_bytes(b"x")
    (root / "link-in.jpg").symlink_to(root / "in.jpg")
    (root / "link-out").symlink_to(outside)
    (root / "dangling.jpg").symlink_to(outside / "nothing.jpg")
    policy = SourcePolicy.parse([str(root)])
    for name in ("in.jpg", "link-in.jpg", "sub", "missing.jpg"):
        policy.confirm((root / name).as_uri())
    policy.confirm("s3://any/key.jpg")
    for name in ("link-out", "link-out/x.jpg", "dangling.jpg"):
        uri = (root / name).as_uri()
        with pytest.raises(ForbiddenSourceError) as error:
            policy.confirm(uri)
        assert str(error.value) == (
            f"{uri}: not allowed: a symbolic link leads outside the sources this service may read "
            "(LANDMARK_ALLOWED_SOURCES)"
        )


def test_a_root_that_is_itself_a_link_is_compared_by_its_target(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "a.jpg").write_bytes(b"x")
    (tmp_path / "photos").symlink_to(tmp_path / "data")
    policy = SourcePolicy.parse([str(tmp_path / "photos")])
    policy.confirm(policy.check(str(tmp_path / "photos" / "a.jpg")))


def test_jobs_carry_their_policy_in_their_parameters() -> None:
    policy = SourcePolicy.parse(["/srv/photos", "s3://bucket/p/"])
    parameters = policy.confine({"sources": ["/srv/photos"]})
    assert parameters == {"sources": ["/srv/photos"], PARAMETER: ["/srv/photos", "s3://bucket/p/"]}
    assert from_parameters(parameters) == policy
    assert from_parameters({"sources": ["/srv/photos"]}) is None  # a CLI job: unconfined
    assert from_parameters({PARAMETER: []}) == SourcePolicy()
    assert policy.widened("/results/uploads/abc/").roots == ("/srv/photos", "/results/uploads/abc")


def test_a_relative_source_is_taken_from_the_working_directory(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    policy = SourcePolicy.parse([str(tmp_path)])
    assert policy.check("a.jpg") == (tmp_path / "a.jpg").as_uri()
    assert refusal(policy, "../a.jpg") == f"../a.jpg: not allowed: {OUTSIDE}"
