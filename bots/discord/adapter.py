"""The Discord adapter: `/imagine` (servers, DMs, user installs), DM text prompts and every `imagine:` button,
translated into Conversation calls. Replies go out through bots/discord/replies.py.

A prompt (`/imagine` or a DM) is stored in the durable intake (bots/intake.py) before it is acknowledged
(deferred: Discord allows 3 s, a SQLite insert takes milliseconds) and before anything slow happens: admission
(limits, prompt moderation) may take seconds, and a command the user saw acknowledged must survive a crash. The
intake hands each stored prompt to `_handle_stored`, again after a restart if it was unfinished. Button clicks go
straight to the conversation (a lost click is harmless).

Start it with `adapter = DiscordAdapter(settings, conversation); await adapter.start()` before
`conversation.start()` (which resumes journaled jobs through `adapter.replier_for`), and `await adapter.close()`.
`start()` opens the intake before it connects, so the gateway never delivers a prompt that could not be stored
(see `start()` for the order).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import aiohttp
import discord
import yarl
from discord import app_commands

from bots import messages
from bots.buttons import Action, parse_button
from bots.contract import AdapterLifecycle
from bots.conversation import Conversation, ImageSource, ImagineCommand
from bots.conversation.servers import KEYS as SETTINGS_KEYS
from bots.conversation.tasks import logged
from bots.discord.replies import DeliveryContext, DiscordModeratorChannel, DiscordReplier, ImagineButton, Route
from bots.errors import AdapterStartError, BadButton, Deferred
from bots.intake import Intake, IntakeEntry
from config.settings import DiscordSettings, Settings
from engine.requests import MAX_IMAGE_STRENGTH, MAX_SEED, MIN_IMAGE_STRENGTH, Requester
from storage.database import Database

log = logging.getLogger(__name__)

PLATFORM = "discord"
# Buttons that start new work answer with a new "thinking" message (the new job's status message); the others
# acknowledge silently and answer, if at all, privately.
NEW_MESSAGE_ACTIONS = frozenset({Action.UPSCALE, Action.VARIATION, Action.REROLL})
COMMAND, DIRECT_MESSAGE = "command", "dm"
"""Kinds of stored prompts: an `/imagine` interaction (keyed by its id), a DM text prompt (`dm:<message id>`)."""
CHOICE_NAME_LIMIT = 100  # Discord's limit for an autocomplete choice's name
MANAGE_GUILD = 0x20
"""The Manage Server permission bit: members holding it (or Administrator) are the server's admins."""
HANDLER_DRAIN_S = 10.0
"""On close, how long commands already being handled may take to finish (their users get an answer)."""


class DiscordStartError(AdapterStartError):
    """Discord refused the token or could not be reached at start. One clear line; `imagine serve` exits 2."""


class _Closing(Exception):
    """A prompt arrived after close() began: it cannot be stored, so it is not taken."""


@dataclass(frozen=True)
class _Endpoints:
    """discord.py keeps its REST base and default gateway in class attributes: point them at the configured
    Discord for as long as the adapter runs, and put them back on close."""

    api_base: str
    gateway: yarl.URL

    @classmethod
    def point_at(cls, config: DiscordSettings) -> _Endpoints:
        saved = cls(discord.http.Route.BASE, discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY)
        discord.http.Route.BASE = config.api_base.rstrip("/")
        if config.gateway_url:
            discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(config.gateway_url)
        return saved

    def restore(self) -> None:
        discord.http.Route.BASE = self.api_base
        discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = self.gateway


class _Client(discord.Client):
    """discord.Client with the command tree, the dynamic `imagine:` buttons and the adapter's handlers."""

    def __init__(self, adapter: DiscordAdapter, guild_ready_timeout: float) -> None:
        super().__init__(
            intents=discord.Intents(guilds=True, dm_messages=True),
            guild_ready_timeout=guild_ready_timeout,
            allowed_mentions=discord.AllowedMentions.none(),
        )
        self.adapter = adapter
        self.tree = app_commands.CommandTree(self)
        self.tree.add_command(_imagine_command(adapter))
        self.tree.add_command(_styles_command(adapter))
        self.tree.add_command(_settings_command(adapter))
        self.tree.on_error = adapter.on_command_error  # type: ignore[method-assign]

    async def setup_hook(self) -> None:
        self.add_dynamic_items(ImagineButton)

    async def on_message(self, message: discord.Message) -> None:
        await self.adapter.on_direct_message(message)

    async def on_interaction(self, interaction: discord.Interaction[Any]) -> None:
        """Every button click, whatever its custom id: ours, malformed, or left over from another bot version.
        (discord.py's dynamic items would drop a click whose id does not match, or whose message it cannot
        read, without an answer.)"""
        if interaction.type is discord.InteractionType.component:
            data: dict[str, Any] = dict(interaction.data or {})
            custom_id = data.get("custom_id")
            await self.adapter.on_button(interaction, custom_id if isinstance(custom_id, str) else "")


def _imagine_command(adapter: DiscordAdapter) -> app_commands.Command[Any, Any, None]:
    @app_commands.command(name="imagine", description=messages.DISCORD_IMAGINE_HELP)
    @app_commands.describe(
        prompt=messages.DISCORD_PROMPT_HELP,
        negative=messages.DISCORD_NEGATIVE_HELP,
        seed=messages.DISCORD_SEED_HELP,
        aspect=messages.DISCORD_ASPECT_HELP,
        style=messages.DISCORD_STYLE_HELP,
        image=messages.DISCORD_IMAGE_HELP,
        strength=messages.DISCORD_STRENGTH_HELP,
    )
    @app_commands.allowed_installs(guilds=True, users=True)
    @app_commands.allowed_contexts(guilds=True, dms=True, private_channels=True)
    async def imagine(
        interaction: discord.Interaction[Any],
        prompt: str,
        negative: str | None = None,
        seed: app_commands.Range[int, 0, MAX_SEED] | None = None,
        aspect: str | None = None,
        style: str | None = None,
        image: discord.Attachment | None = None,
        strength: app_commands.Range[float, MIN_IMAGE_STRENGTH, MAX_IMAGE_STRENGTH] | None = None,
    ) -> None:
        await adapter.on_imagine(interaction, prompt, negative, seed, aspect, style, ImageOptions(image, strength))

    @imagine.autocomplete("style")
    async def style_choices(interaction: discord.Interaction[Any], typed: str) -> list[app_commands.Choice[str]]:
        """Autocomplete (interaction type 4): up to 25 presets matching what was typed so far."""
        return [
            app_commands.Choice(name=label[:CHOICE_NAME_LIMIT], value=name)
            for name, label in adapter.style_suggestions(typed if isinstance(typed, str) else "")
        ]

    return imagine


@dataclass(frozen=True)
class ImageOptions:
    """/imagine's image prompt options: an attachment (option type 11, from `data.resolved.attachments`) and its
    strength. The range Discord's client enforces is not trusted: the conversation checks it again."""

    image: Any = None
    strength: Any = None

    @property
    def as_registered(self) -> bool:
        strength = self.strength
        number = strength is None or (isinstance(strength, int | float) and not isinstance(strength, bool))
        return number and (self.image is None or isinstance(self.image, discord.Attachment))

    def payload(self) -> dict[str, Any]:
        """JSON for the intake: what is needed to fetch the picture later (after a restart too)."""
        return {"image": _attachment_payload(self.image) if self.image else None, "strength": self.strength}


def _attachment_payload(attachment: discord.Attachment) -> dict[str, Any]:
    return {"url": attachment.url, "size": attachment.size, "filename": attachment.filename}


def _styles_command(adapter: DiscordAdapter) -> app_commands.Command[Any, Any, None]:
    @app_commands.command(name="imagine-styles", description=messages.DISCORD_STYLES_HELP)
    @app_commands.allowed_installs(guilds=True, users=True)
    @app_commands.allowed_contexts(guilds=True, dms=True, private_channels=True)
    async def imagine_styles(interaction: discord.Interaction[Any]) -> None:
        await adapter.on_styles(interaction)

    return imagine_styles


def _settings_command(adapter: DiscordAdapter) -> app_commands.Command[Any, Any, None]:
    @app_commands.command(name="imagine-settings", description=messages.DISCORD_SETTINGS_HELP)
    @app_commands.describe(setting=messages.DISCORD_SETTING_HELP, value=messages.DISCORD_SETTING_VALUE_HELP)
    @app_commands.choices(setting=[app_commands.Choice(name=key, value=key) for key in SETTINGS_KEYS])
    @app_commands.default_permissions(manage_guild=True)  # shown to admins only; on_settings checks anyway
    @app_commands.allowed_installs(guilds=True, users=False)
    @app_commands.allowed_contexts(guilds=True, dms=False, private_channels=False)
    async def imagine_settings(
        interaction: discord.Interaction[Any],
        setting: app_commands.Choice[str] | None = None,
        value: str | None = None,
    ) -> None:
        await adapter.on_settings(interaction, setting.value if setting is not None else "", value)

    return imagine_settings


def _fields(requester: Requester) -> dict[str, Any]:
    """`dataclasses.asdict` for a dataclass of plain values, without its deep copy: this runs before the ack."""
    return dict(vars(requester))


def _options_as_registered(prompt: Any, negative: Any, seed: Any, aspect: Any, style: Any = None) -> bool:
    """discord.py passes an option's value as Discord typed it, which need not be what `/imagine` declares now."""
    texts = isinstance(prompt, str) and all(isinstance(v, str | None) for v in (negative, aspect, style))
    return texts and (seed is None or (isinstance(seed, int) and not isinstance(seed, bool)))


class DiscordAdapter(AdapterLifecycle):
    def __init__(
        self,
        settings: Settings,
        conversation: Conversation,
        *,
        clock: Callable[[], float] = time.time,
        guild_ready_timeout: float = 2.0,
        database: Database | None = None,
    ) -> None:
        """`database`: the service's shared one; without it the adapter connects one of its own in start()."""
        self._config = settings.discord
        self._database = database or Database(settings.store.url)
        self._owns_database = database is None
        self._conversation = conversation
        self._clock = clock
        self._guild_ready_timeout = guild_ready_timeout
        self._moderator_roles = frozenset(self._config.moderator_role_ids)
        self._allowed_guilds = frozenset(self._config.guild_ids)
        self._image_origins = tuple(settings.image_prompts.discord_file_origins)
        self._endpoints: _Endpoints | None = None
        self._client: _Client | None = None
        self._gateway: asyncio.Task[None] | None = None
        self._handling: set[asyncio.Task[Any]] = set()
        """discord.py's event tasks currently inside a handler of ours; close() lets them finish."""
        self._intake: Intake | None = None
        self._acknowledging: dict[str, asyncio.Future[DiscordReplier | None]] = {}
        """Prompts stored by this process, by intake key: their replier once acknowledged (it knows its thinking
        message is new), None if the acknowledgement failed. The intake's handler waits for it."""

    # ---- lifecycle ---------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Open the intake, log in (a bad token raises DiscordStartError), connect the gateway, register the
        platform, hand stored prompts over, sync `/imagine`.

        The gateway delivers commands the moment it is up, and each must be stored before it is deferred: so the
        intake takes prompts from before the connection. It hands them to `_handle_stored` only once the client is
        ready and the platform registered, because prompts resumed from before a restart reply through
        replier_for, which needs the logged-in client. The sync comes last: nothing waits for it."""
        if not self._config.token:
            raise DiscordStartError("discord.token is empty: set IMAGINE_DISCORD__TOKEN to the bot's token")
        self._intake = Intake(self._database, PLATFORM, self._handle_stored)
        try:
            if self._owns_database:
                await self._database.connect()
            await self._intake.open()
            self._endpoints = _Endpoints.point_at(self._config)
            self._client = _Client(self, self._guild_ready_timeout)
            await self._log_in(self._client)
            self._gateway = asyncio.create_task(self._client.connect(reconnect=True), name="discord-gateway")
            await self._until_ready(self._client, self._gateway)
            self._register_platform(self._client)
            await self._intake.resume()
            synced = await self._client.tree.sync()
        except BaseException:
            await self.close()
            raise
        log.info("discord: connected as %s, %d command(s) synced", self._client.user, len(synced))

    def _register_platform(self, client: _Client) -> None:
        moderators = None
        if self._config.moderator_channel_id:
            moderators = DiscordModeratorChannel(client, self._config.moderator_channel_id)
        self._conversation.add_platform(PLATFORM, self.replier_for, moderators)

    async def _log_in(self, client: _Client) -> None:
        try:
            await client.login(self._config.token)
        except discord.LoginFailure:
            raise DiscordStartError(
                "Discord rejected discord.token (401 Unauthorized): set IMAGINE_DISCORD__TOKEN to a valid bot token"
            ) from None
        except (aiohttp.ClientError, OSError, discord.HTTPException) as exc:
            raise DiscordStartError(f"cannot reach Discord at {self._config.api_base}: {exc}") from None

    @staticmethod
    async def _until_ready(client: _Client, gateway: asyncio.Task[None]) -> None:
        ready = asyncio.create_task(client.wait_until_ready(), name="discord-ready")
        try:
            await asyncio.wait({ready, gateway}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            ready.cancel()
        if not client.is_ready():
            error = gateway.exception() if gateway.done() and not gateway.cancelled() else None
            raise DiscordStartError(f"the Discord gateway closed before the bot was ready: {error}")

    async def close(self) -> None:
        if self._intake is not None:  # first: prompts still being handled stay stored for the next start
            intake, self._intake = self._intake, None
            await intake.close()
        if self._owns_database:
            await self._database.close()
        self._acknowledging.clear()
        if self._handling:
            _, late = await asyncio.wait(set(self._handling), timeout=HANDLER_DRAIN_S)
            if late:
                log.warning("discord: closing with %d command(s) still being handled", len(late))
        if self._client is not None:
            await self._client.close()
        if self._gateway is not None:
            try:
                await self._gateway
            except Exception as exc:  # the connection already failed; close() must still finish
                log.warning("discord gateway ended with an error: %s", exc)
            self._gateway = None
        if self._endpoints is not None:
            self._endpoints.restore()
            self._endpoints = None

    @property
    def client(self) -> discord.Client:
        if self._client is None:
            raise RuntimeError("DiscordAdapter.start() has not been called")
        return self._client

    def replier_for(self, delivery: dict[str, Any]) -> DiscordReplier:
        """Rebuild a Replier from a journaled delivery context (after a restart, for approvals)."""
        return DiscordReplier(self.client, DeliveryContext.from_dict(delivery), clock=self._clock)

    # ---- events ------------------------------------------------------------------------------------------

    async def on_imagine(
        self,
        interaction: discord.Interaction[Any],
        prompt: str,
        negative: str | None,
        seed: int | None,
        aspect: str | None,
        style: str | None = None,
        image_options: ImageOptions | None = None,
    ) -> None:
        with self._tracked():
            await self._on_imagine(interaction, prompt, negative, seed, aspect, style, image_options or ImageOptions())

    async def _on_imagine(
        self,
        interaction: discord.Interaction[Any],
        prompt: str,
        negative: str | None,
        seed: int | None,
        aspect: str | None,
        style: str | None,
        image_options: ImageOptions,
    ) -> None:
        if not self._server_enabled(interaction.guild_id):
            await self._answer_at_once(interaction, messages.DISCORD_SERVER_NOT_ENABLED)
            return
        registered = _options_as_registered(prompt, negative, seed, aspect, style) and image_options.as_registered
        if not registered:  # a left-over command, other option types
            log.warning("discord: /imagine with options of unexpected types from %s", interaction.user.id)
            await self._answer_at_once(interaction, messages.UNKNOWN_OPTIONS)
            return
        # Stored before the defer, so the context cannot name the thinking message yet: the replier of this
        # process learns it from the defer, one rebuilt after a restart asks Discord for it (replies.py).
        context = self._interaction_context(interaction, new_message=True)
        payload = {
            "prompt": prompt,
            "negative": negative or "",
            "seed": seed,
            "aspect": aspect or "1:1",
            "style": style or "",
            "requester": _fields(self._requester(interaction.user, interaction.guild_id, interaction.channel_id)),
            "context": context.to_dict(),
            **image_options.payload(),
        }
        with self._tracked():
            try:
                await self._take(
                    str(interaction.id), COMMAND, payload, lambda: self._acknowledge(interaction, new_message=True)
                )
            except _Closing:
                await self._answer_at_once(interaction, messages.RESTARTING)
            except Exception:  # not stored, so not deferred: say so rather than leave the user waiting
                log.exception("discord: could not store an /imagine command")
                await self._answer_at_once(interaction, messages.SOMETHING_WENT_WRONG)

    async def on_direct_message(self, message: discord.Message) -> None:
        """A plain DM to the bot is a prompt; with an image attached, an image prompt (its first attachment)."""
        if message.guild is not None or message.author.bot:
            return
        if not message.content.strip() and not message.attachments:
            return
        context = DeliveryContext(
            route=Route.CHANNEL, channel_id=str(message.channel.id), user_id=str(message.author.id)
        )
        replier = DiscordReplier(self.client, context, clock=self._clock, fresh=True)
        payload = {
            "prompt": message.content,
            "negative": "",
            "seed": None,
            "aspect": "1:1",
            "requester": _fields(self._requester(message.author, None, message.channel.id)),
            "context": context.to_dict(),
            **ImageOptions(message.attachments[0] if message.attachments else None).payload(),
        }

        async def nothing_to_send() -> DiscordReplier:  # a DM is not acknowledged: its first reply is a status
            return replier

        await self._guarded(
            self._take(f"dm:{message.id}", DIRECT_MESSAGE, payload, nothing_to_send), replier, "a DM prompt"
        )

    async def on_styles(self, interaction: discord.Interaction[Any]) -> None:
        """`/imagine-styles`: the presets, privately."""
        with self._tracked():
            await self._answer_at_once(interaction, self._conversation.styles_text())

    def style_suggestions(self, typed: str) -> list[tuple[str, str]]:
        return self._conversation.styles.suggestions(typed)

    async def on_settings(self, interaction: discord.Interaction[Any], key: str, value: str | None) -> None:
        """`/imagine-settings [setting value]`: changed (by a member with Manage Server) and summarised, privately.
        The change is stored before the answer, which is the acknowledgement."""
        with self._tracked():
            if not isinstance(value, str | None):
                await self._answer_at_once(interaction, messages.UNKNOWN_OPTIONS)
                return
            user = self._requester(interaction.user, interaction.guild_id, interaction.channel_id)
            answer = await self._conversation.settings_desk.answer(user, _is_admin(interaction), key, value or "")
            await self._answer_at_once(interaction, answer)

    async def on_button(self, interaction: discord.Interaction[Any], custom_id: str) -> None:
        with self._tracked():
            try:
                action = parse_button(custom_id).action
            except BadButton:
                log.warning("discord: a click on an unknown button %.100r", custom_id)
                action = None
            replier = await self._acknowledge(interaction, new_message=action in NEW_MESSAGE_ACTIONS)
            if replier is None:
                return
            user = self._requester(interaction.user, interaction.guild_id, interaction.channel_id)
            press = self._conversation.press(
                custom_id,
                user,
                replier,
                is_moderator=await self._is_moderator(interaction),
                place=replier.context.to_dict(),
            )
            await self._guarded(press, replier, f"button {custom_id[:100]!r}")

    async def _take(
        self, key: str, kind: str, payload: dict[str, Any], acknowledge: Callable[[], Awaitable[DiscordReplier | None]]
    ) -> None:
        """Store a prompt, then acknowledge it: nothing the user saw acknowledged may be lost in a crash. The
        intake hands the prompt to `_handle_stored` once `acknowledge` is back (a prompt stored before a restart
        may reach it first, through `resume()`); the handler takes the replier from `_acknowledging`."""
        if self._intake is None:
            raise _Closing("the Discord adapter is closing")
        intake_key = f"{PLATFORM}:{key}"
        if intake_key in self._acknowledging:
            log.info("discord: ignoring a replay of a prompt being taken (%s)", key)
            return
        acknowledged: asyncio.Future[DiscordReplier | None] = asyncio.get_running_loop().create_future()
        self._acknowledging[intake_key] = acknowledged
        try:
            async with self._intake.taking(key, kind, payload) as stored:
                if stored:
                    acknowledged.set_result(await acknowledge())
                else:  # a replay (gateway RESUME): the copy stored first was acknowledged
                    log.info("discord: ignoring a prompt seen before (%s)", key)
        finally:  # the handler it was handed to has not run yet: it finds the answer set
            if not acknowledged.done():
                acknowledged.set_result(None)
                if self._acknowledging.get(intake_key) is acknowledged:
                    del self._acknowledging[intake_key]

    async def _tell_saved_for_restart(self, intake_key: str) -> None:
        """The queue stopped taking work (shutting down): the prompt stays stored and runs after the restart,
        which then edits the same message; a prompt from before a restart has been told already."""
        acknowledging = self._acknowledging.pop(intake_key, None)
        replier = await acknowledging if acknowledging is not None else None
        if replier is not None:
            await logged(replier.show_status(messages.SAVED_FOR_RESTART), "telling a user their prompt waits")

    async def _handle_stored(self, entry: IntakeEntry) -> None:
        """A stored prompt → `Conversation.imagine`, answered where it was asked (after a restart too)."""
        try:
            opened = await self._conversation.open_stored(PLATFORM, entry)
        except Deferred:
            await self._tell_saved_for_restart(entry.key)
            raise
        if not opened:
            log.info("discord: prompt %s already became a job before the restart", entry.key)
            return
        acknowledging = self._acknowledging.pop(entry.key, None)
        replier = await acknowledging if acknowledging is not None else None
        if acknowledging is not None and replier is None:
            log.warning("discord: prompt %s was stored but could not be acknowledged; dropping it", entry.key)
            return
        if entry.kind not in (COMMAND, DIRECT_MESSAGE):
            log.warning("discord: ignoring a stored prompt of unknown kind %r", entry.kind)
            return
        body = entry.payload
        if replier is None:  # stored by the process before a restart
            replier = self.replier_for(body["context"])
        command = ImagineCommand(
            prompt=body["prompt"],
            requester=Requester(**body["requester"]),
            negative_prompt=body["negative"],
            seed=body["seed"],
            aspect=body["aspect"],
            style=str(body.get("style") or ""),  # prompts stored before styles existed have none
            # This process's replier knows the thinking message's id from the defer: journal that with the job.
            place=replier.context.to_dict(),
            intake_key=entry.key,
            image=self._image_source(body.get("image")),
            strength=body.get("strength"),
        )
        await self._guarded(self._conversation.imagine(command, replier), replier, f"stored prompt {entry.key}")

    def _image_source(self, attachment: Any) -> ImageSource | None:
        """A stored attachment as the conversation fetches it: only from Discord's own CDN hosts."""
        if not isinstance(attachment, dict):
            return None
        size = attachment.get("size")
        return ImageSource(
            url=str(attachment.get("url") or ""),
            allowed_origins=tuple(self._image_origins),
            declared_bytes=size if isinstance(size, int) else None,
        )

    async def on_command_error(
        self, interaction: discord.Interaction[Any], error: app_commands.AppCommandError
    ) -> None:
        """A command this bot does not have (left over, or another deployment's), options it cannot read, or a
        failure of ours: every one is answered. Only our own failures are logged with their stack."""
        with self._tracked():
            data: dict[str, Any] = dict(interaction.data or {})
            name = str(data.get("name", ""))[:40]
            if isinstance(error, app_commands.CommandNotFound | app_commands.CommandSignatureMismatch):
                log.warning("discord: answered an unknown command %r (%s)", name, type(error).__name__)
                text = messages.UNKNOWN_COMMAND
            elif isinstance(error, app_commands.CommandInvokeError):
                log.error("discord command %r failed", name, exc_info=error)
                text = messages.SOMETHING_WENT_WRONG
            else:
                log.warning("discord: unreadable options for %r: %s", name, type(error).__name__)
                text = messages.UNKNOWN_OPTIONS
            if not interaction.response.is_done():
                await self._answer_at_once(interaction, text)

    # ---- helpers -----------------------------------------------------------------------------------------

    async def _acknowledge(self, interaction: discord.Interaction[Any], *, new_message: bool) -> DiscordReplier | None:
        """Defer (Discord allows 3 s). A command, or a button that starts new work, gets a "thinking" message
        that becomes its status message; other buttons are acknowledged without a message."""
        try:
            response = await interaction.response.defer(thinking=new_message)
        except discord.HTTPException as exc:
            log.warning("discord interaction %s could not be acknowledged: %s", interaction.id, exc.text or exc)
            return None
        if new_message:
            original = str(response.message_id or "") if response is not None else ""
        else:
            original = str(interaction.message.id) if interaction.message is not None else ""
        context = self._interaction_context(interaction, new_message=new_message, original_message_id=original)
        return DiscordReplier(self.client, context, clock=self._clock, fresh=True)

    async def _answer_at_once(self, interaction: discord.Interaction[Any], text: str) -> None:
        """Acknowledge with a private answer instead of a defer: for a command that will not be taken."""
        try:
            await interaction.response.send_message(text, ephemeral=True)
        except (discord.HTTPException, discord.InteractionResponded) as exc:
            log.warning("discord interaction %s could not be answered: %s", interaction.id, exc)

    @staticmethod
    def _interaction_context(
        interaction: discord.Interaction[Any], *, new_message: bool, original_message_id: str = ""
    ) -> DeliveryContext:
        return DeliveryContext(
            route=Route.INTERACTION,
            channel_id=str(interaction.channel_id or ""),
            user_id=str(interaction.user.id),
            guild_id=str(interaction.guild_id or ""),
            application_id=str(interaction.application_id),
            interaction_token=interaction.token,
            token_issued_at=interaction.created_at.timestamp(),
            original_message_id=original_message_id,
            deferred_thinking=new_message,
        )

    def _requester(self, user: discord.abc.User, guild_id: int | None, channel_id: int | None) -> Requester:
        return Requester(
            platform=PLATFORM,
            user_id=str(user.id),
            server_id=str(guild_id or ""),
            channel_id=str(channel_id or ""),
            display_name=user.display_name,
        )

    def _server_enabled(self, guild_id: int | None) -> bool:
        """discord.guild_ids, when set, lists the servers that may use the bot; DMs always may."""
        return guild_id is None or not self._allowed_guilds or guild_id in self._allowed_guilds

    async def _is_moderator(self, interaction: discord.Interaction[Any]) -> bool:
        """A moderator holds one of discord.moderator_role_ids, or the moderator role its admins set for the
        server, in the guild the click came from."""
        member = interaction.user
        if not isinstance(member, discord.Member):
            return False
        roles = set(self._moderator_roles)
        if interaction.guild_id:
            server = await self._conversation.server_settings(PLATFORM, str(interaction.guild_id))
            if server.moderator_role.isdigit():
                roles.add(int(server.moderator_role))
        return any(role.id in roles for role in member.roles)

    async def _guarded(self, work: Awaitable[Any], replier: DiscordReplier, what: str) -> None:
        """Nothing a user sends may crash the bot: log the failure, tell the user briefly."""
        with self._tracked():
            try:
                await work
            except Exception:
                log.exception("discord: handling %s failed", what)
                try:
                    await replier.refuse(messages.SOMETHING_WENT_WRONG)
                except Exception as exc:  # Discord unreachable or shutting down: the log has the story
                    log.warning("discord: could not tell the user about the failure: %s", exc)

    @contextmanager
    def _tracked(self) -> Iterator[None]:
        """close() lets the current task finish first (a stored prompt still gets its defer, a user an answer)."""
        task = asyncio.current_task()
        added = task is not None and task not in self._handling  # re-entrant: the outermost use untracks
        if added:
            self._handling.add(task)  # type: ignore[arg-type]
        try:
            yield
        finally:
            if added:
                self._handling.discard(task)  # type: ignore[arg-type]

    async def settled(self) -> None:
        """Wait until every interaction being handled has been answered and every stored prompt handled (for
        tests and orderly stops)."""
        while self._handling:
            await asyncio.gather(*list(self._handling), return_exceptions=True)
        if self._intake is not None:
            await self._intake.settled()


def _is_admin(interaction: discord.Interaction[Any]) -> bool:
    """A member with Manage Server (0x20) or Administrator in the interaction's `member.permissions`."""
    if interaction.guild_id is None or not isinstance(interaction.user, discord.Member):
        return False
    permissions = interaction.permissions
    return bool(permissions.value & MANAGE_GUILD) or permissions.administrator
