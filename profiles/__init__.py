"""Profiles: system prompt templates, data transforms and logits processors, by name."""

from __future__ import annotations

from profiles.base import Example, Profile
from profiles.default import DefaultProfile
from profiles.emoji_think import EmojiThinkProfile

PROFILES: dict[str, type] = {
    DefaultProfile.name: DefaultProfile,
    EmojiThinkProfile.name: EmojiThinkProfile,
}


def available_profiles() -> list[str]:
    """Names accepted by the ``profile`` field of config.json."""
    return sorted(PROFILES)


def get_profile(name: str) -> Profile:
    """Instantiate the profile called ``name``.

    Raises:
        KeyError: no such profile; the message lists the known ones.
    """
    try:
        return PROFILES[name]()
    except KeyError:
        raise KeyError(
            f"unknown profile {name!r}; choose one of: {', '.join(available_profiles())}"
        ) from None


__all__ = ["Example", "PROFILES", "Profile", "available_profiles", "get_profile"]
