"""Every user-facing string of the chat service, in one place. No tracebacks, no internal names, no term lists."""

from __future__ import annotations

from engine.requests import JobState, ProgressEvent

FAILURES = {
    "timeout": "it took too long and was stopped. Please try again, perhaps with fewer steps.",
    "out_of_memory": "the image generator ran out of memory. Please try again in a moment.",
    "generation_failed": "something went wrong while drawing. Please try again.",
    "engine_closed": "the service is restarting. Your request will continue when it is back.",
}
UNKNOWN_FAILURE = "something went wrong. Please try again."

QUEUE_FULL = "The image queue is full right now. Please try again in a minute."
RESTARTING = "The service is restarting. Please try again in a minute."
SAVED_FOR_RESTART = "⏸️ The service is restarting. Your prompt is saved and will run as soon as it is back."
WAITING_FOR_REVIEW = "Your prompt needs a quick look from a moderator. You'll get your images here once it is approved."
UNKNOWN_BUTTON = "That button is not recognised. It may belong to an older version of this bot."
UNKNOWN_COMMAND = (
    "I don't know that command. Use /imagine followed by what to draw, e.g. /imagine a lighthouse at dawn."
)
UNKNOWN_OPTIONS = "I couldn't read that command's options. Please try /imagine again."
UNKNOWN_JOB = "I can't find those images any more."
NOT_YOURS_TO_CANCEL = "Only the person who asked for these images can cancel them."
ALREADY_FINISHED = "That job has already finished."
NOT_A_MODERATOR = "Only moderators can approve or reject prompts."
CANCELLED = "🚫 Cancelled."
DONE = "✅ Done."
SOMETHING_WENT_WRONG = "Sorry, something went wrong on our side. Please try again in a moment."
CANNOT_POST_HERE = (
    "I can't post in this channel because I'm not a member of it. Invite me (`/invite @imagine`), "
    "or send me the prompt in a direct message. Nothing was generated."
)

IMAGE_HOST_NOT_ALLOWED = (
    "I can only use images uploaded to this chat (attached to the message or the command), not links to other "
    "sites. Nothing was generated."
)
IMAGE_DOWNLOAD_FAILED = "I couldn't fetch your image from the chat's file storage. Please attach it again."
IMAGE_DOWNLOAD_SLOW = "Fetching your image took too long. Please try again, or attach a smaller image."
IMAGE_HELD_FOR_REVIEW = (
    "Your image needs a quick look from a moderator before I can use it. You'll get your pictures here once it "
    "is approved."
)
IMAGE_REFUSED_BY_FILTER = "I can't use that image: the safety filter flagged it. Nothing was generated."


NOT_YOURS_TO_DELETE = "Only the person who asked for these images, or a moderator, can delete them."
DELETED = "🗑️ Deleted: the images are removed."
ALREADY_DELETED = "Those images were already deleted."
NOT_AN_ADMIN = (
    "Only this server's admins (Discord: Manage Server; Slack: workspace admins and owners) can change its "
    "imagine settings."
)
SETTINGS_NEED_A_SERVER = "Settings belong to a server or workspace: use /imagine-settings in one of its channels."
SETTINGS_STRENGTH = "strength must be a number from 0.1 (a light touch) to 1.0 (little of the image is left)"
SETTINGS_STRICTNESS = "moderation must be `strict` (hold everything not clearly benign) or `normal`"
NO_STYLES = "There are no style presets on this server."


def invalid_request(reason: str) -> str:
    return f"I can't use that request: {reason}."


def unknown_style(name: str, names: list[str]) -> str:
    shown = name if len(name) <= 40 else name[:39] + "…"
    if not names:
        return f"There is no style called “{shown}”, and no styles are set up."
    return f"There is no style called “{shown}”. The styles are: {', '.join(names)}."


def styles_list(labels: list[str]) -> str:
    if not labels:
        return NO_STYLES
    lines = "\n".join(f"• {label}" for label in labels)
    return f"Styles (Discord: the `style` option; Slack: `style:NAME` in the prompt):\n{lines}"


def channel_not_allowed(channels: tuple[str, ...]) -> str:
    where = ", ".join(channels)
    return f"This server's admins allow imagine only in some channels ({where}). Nothing was generated."


def settings_summary(server: str, lines: list[str], changed: str = "") -> str:
    head = f"✅ {changed}\n" if changed else ""
    return head + f"imagine settings for {server}:\n" + "\n".join(f"• {line}" for line in lines)


def settings_unknown_key(key: str, keys: tuple[str, ...]) -> str:
    shown = key if len(key) <= 40 else key[:39] + "…"
    return f"There is no setting “{shown}”. Settings: {', '.join(keys)}"


def settings_value_needed(key: str) -> str:
    return f"Give a value: /imagine-settings {key} VALUE (`none` or `default` clears it)"


def settings_bad_id(word: str) -> str:
    shown = word if len(word) <= 40 else word[:39] + "…"
    return f"“{shown}” is not a channel, role or user group (mention it, or give its id)"


def settings_id_count(most: int) -> str:
    return "give one channel, role or user group" if most == 1 else f"give 1 to {most} channels"


def settings_limit_range(key: str, ceiling: int) -> str:
    return f"{key} must be a whole number from 1 to {ceiling} (the global limit; a server may only tighten it)"


def status(event: ProgressEvent, prompt: str) -> str:
    """The one status line a user sees while their job waits and runs."""
    shown = _quote(prompt)
    if event.state is JobState.QUEUED:
        return f"⏳ Queued — position {event.position or 1}. {shown}"
    if event.state is JobState.RUNNING:
        if not event.step:
            return f"🎨 Starting… {shown}"
        return f"🎨 Imagining… {round(event.fraction * 100)}% (step {event.step}/{event.total_steps}) {shown}"
    if event.state is JobState.CANCELLED:
        return f"{CANCELLED} {shown}"
    if event.state is JobState.FAILED:
        return f"⚠️ Sorry, {FAILURES.get(event.error_kind or '', UNKNOWN_FAILURE)} {shown}"
    return f"{DONE} {shown}"


def status_delivery_delayed(prompt: str) -> str:
    return f"⚠️ Your images are ready, but I couldn't post them yet. They will follow. {_quote(prompt)}"


def delivery_given_up(prompt: str) -> str:
    return (
        f"⚠️ I couldn't post your images for {_quote(prompt)} where you asked, even after trying for a long "
        "time, so I stopped. Send the prompt again somewhere I can post, for example in a direct message to me."
    )


def delivery_text(prompt: str, seeds: tuple[int, ...] | list[int], withheld: int = 0, style: str = "") -> str:
    seed_text = f"seeds {seeds[0]}–{seeds[-1]}" if len(seeds) > 1 else f"seed {seeds[0]}"
    text = f"{_quote(prompt)} — {seed_text}" + (f" — style {style}" if style else "")
    if withheld:
        text += f"\n{withheld} image(s) were withheld by the safety filter and sent to a moderator."
    return text


def upscale_text(prompt: str, index: int, seed: int) -> str:
    return f"Image {index + 1} of {_quote(prompt)} — seed {seed}"


def review_post(platform: str, user_id: str, place: str, prompt: str, reasons: list[str] | tuple[str, ...]) -> str:
    why = "; ".join(reasons) or "flagged"
    return f"Prompt held for review\nFrom: {platform} user {user_id}{place}\nPrompt: {_quote(prompt)}\nWhy: {why}"


def review_decided(approved: bool, moderator: str, reason: str = "") -> str:
    verdict = "✅ Approved" if approved else "❌ Rejected"
    return f"{verdict} by {moderator}" + (f": {reason}" if reason else "")


def _quote(prompt: str, limit: int = 200) -> str:
    prompt = prompt if len(prompt) <= limit else prompt[: limit - 1] + "…"
    return f"“{prompt}”"


# ---- Discord: command help and adapter-level answers ------------------------------------------------------------
DISCORD_IMAGINE_HELP = "Imagine four pictures from a text prompt"
DISCORD_PROMPT_HELP = "What to draw, e.g. a lighthouse at dawn, watercolour"
DISCORD_NEGATIVE_HELP = "What to keep out of the picture, e.g. text, blur"
DISCORD_SEED_HELP = "A number that makes the result repeatable (random when left out)"
DISCORD_ASPECT_HELP = "Width:height, e.g. 16:9 or 2:3 (default 1:1)"
DISCORD_IMAGE_HELP = "A JPEG, PNG or WebP picture to start from (an image prompt)"
DISCORD_STRENGTH_HELP = "With an image: how much to change it, 0.1 (a little) to 1.0 (a lot)"
DISCORD_STYLE_HELP = "A style preset (see /imagine-styles)"
DISCORD_STYLES_HELP = "List the style presets"
DISCORD_SETTINGS_HELP = "This server's imagine settings (admins: Manage Server)"
DISCORD_SETTING_HELP = "Which setting to change (leave out to see them all)"
DISCORD_SETTING_VALUE_HELP = "Its new value; `none` or `default` clears it"
DISCORD_SERVER_NOT_ENABLED = "Imagine is not enabled in this server. You can still use it in a DM with me."


# ---- the web playground (bots/web/playground.py) ------------------------------------------------------------------
WEB_STARTING = "The playground is starting. Please try again in a moment."
WEB_NOT_FOUND = "I can't find that. Only the browser that asked for these images can see them."
WEB_WAITING_FOR_REVIEW = "Waiting for a moderator."
WEB_SEED_NOT_A_NUMBER = "seed must be a whole number between 0 and {max_seed}, got {seed}"
WEB_VISITOR_NAME = "playground visitor"
WEB_STRENGTH_NOT_A_NUMBER = "strength must be a number from 0.1 to 1.0, got {strength}"
WEB_DELETED = "🗑️ These images were deleted."


# ---- button labels -------------------------------------------------------------------------------------------

APPROVE_LABEL = "Approve"
REJECT_LABEL = "Reject"
CANCEL_LABEL = "Cancel"
REROLL_LABEL = "🔄"
DELETE_LABEL = "🗑️ Delete"


def upscale_label(index: int) -> str:
    return f"U{index + 1}"


def variation_label(index: int) -> str:
    return f"V{index + 1}"
