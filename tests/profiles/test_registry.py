"""The profile registry: lookup by name, clear errors, every profile honours the protocol."""

from __future__ import annotations

import pytest

from profiles import PROFILES, Profile, available_profiles, get_profile


def test_unknown_name_raises_key_error_listing_known_names():
    with pytest.raises(KeyError) as excinfo:
        get_profile("no_such_profile")
    message = str(excinfo.value)
    assert "no_such_profile" in message
    for name in available_profiles():
        assert name in message


def test_built_in_profiles_are_available():
    assert {"default", "emoji_think"} <= set(available_profiles())
    assert available_profiles() == sorted(PROFILES)


@pytest.mark.parametrize("name", sorted(PROFILES))
def test_every_profile_follows_the_protocol_under_its_name(name):
    profile = get_profile(name)
    assert isinstance(profile, Profile)
    assert profile.name == name
    assert get_profile(name) is not profile
