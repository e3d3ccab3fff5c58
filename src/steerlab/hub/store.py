"""LocalStore: the catalogue (SQLAlchemy) and the blobs (content-addressed files) under one root folder."""

from __future__ import annotations

import builtins
import dataclasses
import json
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import or_, select
from sqlalchemy.exc import IntegrityError

from steerlab.errors import SteerlabError
from steerlab.hub import signing
from steerlab.hub.access import ANONYMOUS, OWNER, Access, describe, expiry, hash_token, lookup, new_token
from steerlab.hub.blobs import BlobStore, Incoming, sha256_hex
from steerlab.hub.catalog import Entry, EntryTag, Namespace, Token, make_engine, make_sessions
from steerlab.hub.entry import EntryInfo, Fit
from steerlab.hub.errors import Conflict, Forbidden, NotFound, PaymentRequired, Unauthorized
from steerlab.hub.ledger import Ledger
from steerlab.hub.market import Listing, PaymentProcessor, active, entitled_names, may_see
from steerlab.hub.protocol import Publication
from steerlab.hub.refs import Ref, Version, check_name, parse_ref
from steerlab.hub.trust import Trust
from steerlab.hub.validate import DEFAULT_MAX_BYTES, Checked, check_upload
from steerlab.hub.verify import VerifyReport, check_content, verify_store

if TYPE_CHECKING:
    from steerlab.vector import Vector

CONFIG_FILE = "store.json"
MAX_TAGS = 32
AUTO_VERSION_TRIES = 20


__all__ = ["ANONYMOUS", "OWNER", "Access", "LocalStore", "Publication", "hash_token"]


class LocalStore:
    """A store on this machine; the server wraps one. Every read checks the blob's hash and (where signed) signature."""

    def __init__(
        self,
        root: str | Path,
        catalog_url: str | None = None,
        max_bytes: int = DEFAULT_MAX_BYTES,
        token: str | None = None,
        trust: Trust | None = None,
        payments: PaymentProcessor | None = None,
    ) -> None:
        self.root = Path(root).expanduser()
        # Which signers reads accept (steerlab.hub.open_store passes this machine's trust file).
        self.trust = trust or Trust()
        self.root.mkdir(parents=True, exist_ok=True)
        self.catalog_url = self._catalog_url(catalog_url)
        self.max_bytes = max_bytes
        self.blobs = BlobStore(self.root / "blobs")
        self.engine = make_engine(self.catalog_url)
        self.sessions = make_sessions(self.engine)
        self.ledger = Ledger(self.sessions, payments)  # entitlements, orders, the pull log (hub/ledger.py)
        # Local file access reads everything; a token given here makes writes behave as they do on a server.
        self.default_access = OWNER if token is None else dataclasses.replace(self.access(token), read_all=True)

    def _catalog_url(self, given: str | None) -> str:
        """The URL is remembered in store.json, so later opens of this root find the same catalogue."""
        config = self.root / CONFIG_FILE
        saved = json.loads(config.read_text())["catalog_url"] if config.exists() else None
        if given and saved and given != saved:
            raise SteerlabError(
                f"store {self.root} already uses catalogue {_redact(saved)}; open it without a catalogue URL "
                f"or edit {config}."
            )
        url = given or saved or f"sqlite:///{self.root / 'catalog.sqlite'}"
        if not saved:
            tmp = config.with_suffix(".tmp")
            tmp.write_text(json.dumps({"catalog_url": url}))
            tmp.replace(config)
        return url

    def close(self) -> None:
        self.engine.dispose()

    def __repr__(self) -> str:
        return f"LocalStore({str(self.root)!r})"

    # ----- namespaces and tokens -----
    def create_token(self, namespace: str | None, private: bool | None = None, **options: Any) -> str:
        """The secret of a new token (issue_token's options: scope, principal, expires)."""
        return self.issue_token(namespace, private, **options)[0]

    def issue_token(
        self,
        namespace: str | None,
        private: bool | None = None,
        scope: str | None = None,
        principal: str | None = None,
        expires: datetime | None = None,
    ) -> tuple[str, dict[str, Any]]:
        """A new token's secret (only its hash is kept) and what the owner lists about it: `scope` (read, write (the
        default) or admin) on `namespace` (created if new), held by `principal` (default: the namespace's name),
        until `expires`. No namespace: an identity-only token (a buyer's or grantee's)."""
        secret, row = new_token(namespace, scope, principal, expires)
        if namespace is not None:
            self._ensure_namespace(namespace)
        with self.sessions.begin() as session:
            if namespace is not None and private is not None:
                self._namespace(session, namespace).private = private
            session.add(row)
            session.flush()
            return secret, describe(row)

    def tokens(self, namespace: str | None = None) -> builtins.list[dict[str, Any]]:
        with self.sessions() as session:
            query = select(Token) if namespace is None else select(Token).where(Token.namespace == namespace)
            return [describe(row) for row in sorted(session.scalars(query).all(), key=lambda r: r.id)]

    def revoke_token(self, token_id: str) -> dict[str, Any]:
        """Revoke a token by the id `tokens` lists (never by its secret): refused from then on."""
        with self.sessions.begin() as session:
            row = session.scalars(select(Token).where(Token.public_id == token_id)).first()
            if row is None:
                raise NotFound(f"no token {token_id!r}: `steerlab hub tokens` lists them.")
            row.revoked_at = row.revoked_at or datetime.now(UTC)
            return describe(row)

    def set_private(self, namespace: str, private: bool) -> None:
        check_name(namespace, "namespace")
        with self.sessions.begin() as session:
            self._namespace(session, namespace).private = private

    def _ensure_namespace(self, namespace: str) -> None:
        """Its own transaction, so two first publishes racing into a new namespace do not fail each other."""
        try:
            with self.sessions.begin() as session:
                self._namespace(session, namespace)
        except IntegrityError:
            pass  # created by a concurrent writer a moment ago

    def _namespace(self, session: Any, namespace: str) -> Namespace:
        row = session.get(Namespace, namespace)
        if row is None:
            row = Namespace(name=namespace, private=False)
            session.add(row)
            session.flush()
        return row

    def access(self, token: str | None) -> Access:
        """The access a bearer token grants; an unknown, revoked or expired token is refused outright."""
        if not token:
            return ANONYMOUS
        with self.sessions() as session:
            return lookup(session, token)

    def _private_namespaces(self) -> set[str]:
        with self.sessions() as session:
            return set(session.scalars(select(Namespace.name).where(Namespace.private.is_(True))))

    def _who(self, access: Access | None) -> Access:
        return self.default_access if access is None else access

    def _seen_by(self, rows: builtins.list[Entry], access: Access | None) -> builtins.list[Entry]:
        """The rows `access` may see: private namespaces and private entries only for members and grantees."""
        access = self._who(access)
        if access.read_all or not rows:
            return rows
        private = self._private_namespaces()
        with self.sessions() as session:
            entitled = entitled_names(session, access.principal)
        return [row for row in rows if may_see(row.namespace, row.name, row.visibility, access, private, entitled)]

    # ----- publishing -----
    def publish(
        self, data: bytes, pub: Publication, access: Access | None = None, incoming: Incoming | None = None
    ) -> EntryInfo:
        """Validate everything, write the blob, then commit the catalogue row: a crash leaves no visible entry."""
        ref = parse_ref(pub.ref)
        self.check_write(ref.namespace, access)
        listing = Listing(pub.visibility, pub.price, pub.terms).checked()
        checked = check_upload(data, pub.kind, self.max_bytes)
        digest = incoming.digest if incoming is not None else sha256_hex(data)
        key_id = _check_signature(pub, ref, checked, digest)
        tags = _check_tags(pub.tags)
        if ref.version and self._taken(ref):
            raise _version_taken(ref)
        if incoming is not None:
            incoming.commit(self.blobs)
        else:
            self.blobs.put(data)
        try:
            info = self._insert(ref, pub, checked, digest, len(data), tags, key_id, listing)
        except Conflict:
            if not self._rows(Entry.sha256 == digest):  # lost a race for the version: leave no orphan blob behind
                self.blobs.delete(digest)
            raise
        if not self.blobs.has(digest):  # a concurrent `rm` of identical content removed it between the two steps
            self.blobs.put(data)
        return info

    def check_write(self, namespace: str, access: Access | None) -> None:
        access = self._who(access)
        if access.can_write(namespace):
            return
        if access.namespace is None:
            raise Unauthorized(f"writing to namespace {namespace!r} needs its token: pass --token (a bearer token).")
        if access.namespace == namespace:
            raise Forbidden(f"this token may only {access.scope} in namespace {namespace!r}, not write.")
        raise Forbidden(f"this token is for namespace {access.namespace!r}, not {namespace!r}.")

    def _insert(
        self,
        ref: Ref,
        pub: Publication,
        checked: Checked,
        digest: str,
        size: int,
        tags: list[str],
        key_id: str | None,
        listing: Listing,
    ) -> EntryInfo:
        self._ensure_namespace(ref.namespace)
        for _ in range(AUTO_VERSION_TRIES):
            version = Version.parse(ref.version) if ref.version else self._next_version(ref)
            row = _entry_row(ref, version, pub, checked, digest, size, tags, key_id)
            row.visibility, row.price, row.terms = listing.visibility, listing.price, listing.terms
            try:
                with self.sessions.begin() as session:
                    session.add(row)
                return EntryInfo.from_row(row)
            except IntegrityError as exc:
                if ref.version:
                    raise _version_taken(ref) from exc
        raise Conflict(f"could not pick a free version for {ref.base}: too many concurrent publishes, try again.")

    def _taken(self, ref: Ref) -> bool:
        with self.sessions() as session:
            query = select(Entry.id).where(
                Entry.namespace == ref.namespace, Entry.name == ref.name, Entry.version == ref.version
            )
            return session.scalars(query).first() is not None

    def _next_version(self, ref: Ref) -> Version:
        with self.sessions() as session:
            rows = session.scalars(
                select(Entry).where(Entry.namespace == ref.namespace, Entry.name == ref.name)
            ).all()  # tombstones count: a removed version is never handed out again
            versions = [Version.parse(r.version) for r in rows]
        return max(versions, key=Version.sort_key).next_patch() if versions else Version(1, 0, 0)

    # ----- reading -----
    def _rows(self, *conditions: Any) -> list[Entry]:
        with self.sessions() as session:
            query = select(Entry).where(Entry.removed_at.is_(None), *conditions)
            return list(session.scalars(query).all())

    def _resolve(self, ref_text: str, access: Access | None) -> Entry:
        ref = parse_ref(ref_text)
        conditions = [Entry.namespace == ref.namespace, Entry.name == ref.name]
        if ref.version:
            conditions.append(Entry.version == ref.version)
        rows = self._seen_by(self._rows(*conditions), access)
        if not rows:
            # One answer whether it is missing or hidden: a private entry is not even confirmed to exist.
            raise NotFound(
                f"no entry {ref} in {self} (if it is private, pass a token that may read it): `steerlab hub search` "
                "lists what there is."
            )
        return _latest(rows)

    def show(self, ref: str, access: Access | None = None) -> EntryInfo:
        return EntryInfo.from_row(self._resolve(ref, access))

    def versions(self, base: str, access: Access | None = None) -> list[EntryInfo]:
        ref = parse_ref(base)
        rows = self._seen_by(self._rows(Entry.namespace == ref.namespace, Entry.name == ref.name), access)
        if not rows:
            raise NotFound(f"no entry {ref} in {self}: `steerlab hub search` lists what there is.")
        return [EntryInfo.from_row(r) for r in sorted(rows, key=_row_order)]

    def get_bytes(
        self,
        ref: str,
        require_signed: bool = False,
        trusted_keys: Iterable[str] | None = None,
        access: Access | None = None,
    ) -> tuple[EntryInfo, bytes]:
        """The content, after checking its hash, its card against the catalogue, and its signature. A licensed entry
        needs an entitlement; a pull by a client (`access` given) is logged with the right it used."""
        info = self.show(ref, access)
        basis, entitlement = self._pull_right(info, access)
        data = self.blobs.read(info.sha256)
        check_content(info, data, require_signed, trusted_keys, self.trust, parse_ref(ref))
        if access is not None:
            self.ledger.record_pull(info, access, basis, entitlement)
        return info, data

    def _pull_right(self, info: EntryInfo, access: Access | None) -> tuple[str, int | None]:
        who = self._who(access)
        if who.read_all:
            return "owner", None
        if who.can_read(info.namespace):
            return "member", None
        with self.sessions() as session:
            held = active(session, who.principal, info.namespace, info.name)
        if held is not None:
            return "entitlement", held.id
        if info.visibility == "licensed":
            raise PaymentRequired(
                f"{info.namespace}/{info.name} is licensed ({info.terms}; {info.price}): pulling it needs an "
                f"entitlement. `steerlab hub purchase {info.namespace}/{info.name}` places an order for its owner to "
                "approve; or ask the owner for a grant."
            )
        return "public", None

    def get_vector(self, ref: str, require_signed: bool = False, trusted_keys: Iterable[str] | None = None) -> Vector:
        from steerlab.vector import Vector

        info, data = self.get_bytes(ref, require_signed, trusted_keys)
        _expect_kind(info, "vector")
        return Vector.from_bytes(data, f"{self.root}:{info.ref}")

    def get_kit(self, ref: str, require_signed: bool = False, trusted_keys: Iterable[str] | None = None) -> Any:
        info, data = self.get_bytes(ref, require_signed, trusted_keys)
        _expect_kind(info, "kit")
        return json.loads(data)

    def list(
        self,
        namespace: str | None = None,
        kind: str | None = None,
        all_versions: bool = False,
        access: Access | None = None,
    ) -> list[EntryInfo]:
        return self.search(namespace=namespace, kind=kind, all_versions=all_versions, access=access)

    def search(
        self,
        text: str | None = None,
        tag: str | None = None,
        base_model: str | None = None,
        kind: str | None = None,
        fits: Fit | Any | None = None,
        namespace: str | None = None,
        all_versions: bool = False,
        access: Access | None = None,
    ) -> builtins.list[EntryInfo]:
        """Latest version of every entry matching all of: text (name, description, tags, model), tag, base model;
        `fits` (a LoadedModel or Fit) keeps only what that model can load."""
        conditions = [Entry.namespace == check_name(namespace, "namespace")] if namespace else []
        if text:
            # The user's text is literal: '%' and '_' are escaped, not wildcards.
            literal = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            pattern = f"%{literal}%"
            tagged = select(EntryTag.entry_id).where(EntryTag.tag.ilike(pattern, escape="\\"))
            columns = (Entry.name, Entry.namespace, Entry.description, Entry.base_model)
            conditions.append(or_(*(c.ilike(pattern, escape="\\") for c in columns), Entry.id.in_(tagged)))
        if tag:
            conditions.append(Entry.id.in_(select(EntryTag.entry_id).where(EntryTag.tag == tag)))
        if base_model:
            conditions.append(Entry.base_model == base_model)
        if kind:
            conditions.append(Entry.kind == kind)
        found = self._visible(self._seen_by(self._rows(*conditions), access), all_versions)
        if fits is not None:
            fit = fits if isinstance(fits, Fit) else Fit.of(fits)
            found = [info for info in found if fit.accepts(info)]
        return found

    @staticmethod
    def _visible(rows: builtins.list[Entry], all_versions: bool) -> builtins.list[EntryInfo]:
        if not all_versions:
            groups: dict[tuple[str, str], list[Entry]] = {}
            for row in rows:
                groups.setdefault((row.namespace, row.name), []).append(row)
            rows = [_latest(group) for group in groups.values()]
        rows.sort(key=lambda r: (r.namespace, r.name, _row_order(r)))
        return [EntryInfo.from_row(r) for r in rows]

    # ----- access to private and licensed entries (hub/market.py, hub/ledger.py) -----
    def grant(
        self, target: str, principal: str, expires: str | None = None, access: Access | None = None
    ) -> dict[str, Any]:
        """Entitle `principal` to NAMESPACE/NAME (every version), or to a whole NAMESPACE, for `expires` ('30d',
        '12h', '2w'; default: until revoked); needs the namespace's admin."""
        namespace, name = _target(target)
        return self.ledger.grant(namespace, name, principal, self._who(access), expiry(expires))

    def set_listing(
        self, base: str, visibility: str, price: str = "", terms: str = "", access: Access | None = None
    ) -> builtins.list[EntryInfo]:
        """Make every live version of NAMESPACE/NAME public, private or licensed (at `price` under `terms`); the
        content and its signature stay as they are. Needs the namespace's admin."""
        ref = parse_ref(base)
        if ref.version:
            raise SteerlabError(f"a listing covers every version: name {ref.base}, not {ref}.")
        if not self._who(access).can_admin(ref.namespace):
            raise Forbidden(f"changing a listing in namespace {ref.namespace!r} needs an admin token for it.")
        listing = Listing(visibility, price, terms).checked()
        with self.sessions.begin() as session:
            live = (Entry.namespace == ref.namespace, Entry.name == ref.name, Entry.removed_at.is_(None))
            rows = session.scalars(select(Entry).where(*live)).all()
            if not rows:
                raise NotFound(f"no entry {ref} in {self}.")
            for row in rows:
                row.visibility, row.price, row.terms = listing.visibility, listing.price, listing.terms
            return [EntryInfo.from_row(row) for row in sorted(rows, key=_row_order)]

    def revoke_grant(self, target: str, principal: str, access: Access | None = None) -> int:
        namespace, name = _target(target)
        return self.ledger.revoke_grants(namespace, name, principal, self._who(access))

    def entitlements(self, namespace: str, access: Access | None = None) -> builtins.list[dict[str, Any]]:
        return self.ledger.entitlements(check_name(namespace, "namespace"), self._who(access))

    def purchase(self, ref: str, access: Access | None = None) -> dict[str, Any]:
        """An order for a licensed entry, at its listed price and terms, for the token's holder."""
        return self.ledger.purchase(self.show(ref, access), self._who(access))

    def decide_order(self, order_id: int, approve: bool, access: Access | None = None) -> dict[str, Any]:
        return self.ledger.decide(order_id, approve, self._who(access))

    def settle_order(self, order_id: int, processor: str) -> dict[str, Any]:
        """A payment processor's confirmation (see hub/market.py): the order is approved, its buyer entitled."""
        return self.ledger.settle(order_id, processor)

    def orders(self, namespace: str | None = None, access: Access | None = None) -> builtins.list[dict[str, Any]]:
        return self.ledger.orders(self._who(access), check_name(namespace, "namespace") if namespace else None)

    def pulls(self, namespace: str, access: Access | None = None) -> builtins.list[dict[str, Any]]:
        return self.ledger.pulls(check_name(namespace, "namespace"), self._who(access))

    # ----- removing and checking -----
    def remove(self, ref: str, access: Access | None = None) -> EntryInfo:
        """Withdraw one version: it disappears from reads, its version is never reused, its blob goes if unshared."""
        wanted = parse_ref(ref)
        if not wanted.version:
            raise SteerlabError(
                f"say which version to remove: {wanted.base}@VERSION (versions are removed one by one)."
            )
        self.check_write(wanted.namespace, access)
        with self.sessions.begin() as session:
            row = session.scalars(
                select(Entry).where(
                    Entry.namespace == wanted.namespace,
                    Entry.name == wanted.name,
                    Entry.version == wanted.version,
                    Entry.removed_at.is_(None),
                )
            ).first()
            if row is None:
                raise NotFound(f"no entry {wanted} to remove.")
            row.removed_at = datetime.now(UTC)
            info = EntryInfo.from_row(row)
        if not self._rows(Entry.sha256 == info.sha256):
            self.blobs.delete(info.sha256)
        return info

    # ----- refusal audits (steerlab.guard.attach), keyed by the audited content's sha256 -----
    def attach_audit(self, ref: str, record: Any, access: Access | None = None) -> EntryInfo:
        """File a `hub audit` report with the entry REF names; needs write (or admin) access to its namespace."""
        from steerlab.guard import attach

        self.check_write(parse_ref(ref).namespace, access)
        info = self.show(ref, access)
        attach.attach_audit(self.root, info.sha256, attach.check_record(record))
        return info

    def audit(self, ref: str, access: Access | None = None) -> dict[str, Any] | None:
        """The audit attached to the entry REF names, for whoever may see the entry; None when there is none."""
        from steerlab.guard import attach

        return attach.attached_audit(self.root, self.show(ref, access).sha256)

    def replace_signature(self, ref: str, signature: str, public_key: str, access: Access | None = None) -> EntryInfo:
        """Re-sign one version (a key rotation, or a re-signed pack): the content stays, the new signature must
        verify against it first. Needs write access to the namespace."""
        wanted = parse_ref(ref)
        if not wanted.version:
            raise SteerlabError(f"say which version to re-sign: {wanted.base}@VERSION.")
        self.check_write(wanted.namespace, access)
        info = self.show(ref, access)
        unsigned = dataclasses.replace(info, signature=None, public_key=None, key_id=None)
        check_content(unsigned, self.blobs.read(info.sha256))  # the blob is what the catalogue says, whoever signed
        key_id = signing.verify(public_key, signature, info.kind, info.ref, info.sha256, info.card)
        with self.sessions.begin() as session:
            row = session.get(Entry, self._resolve(ref, access).id)
            row.signature, row.public_key, row.key_id = signature, public_key, key_id
            return EntryInfo.from_row(row)

    def verify(self, clean: bool = False) -> VerifyReport:
        """Every live entry's content against its catalogue row; leftovers reported (and, with clean, removed)."""
        return verify_store([EntryInfo.from_row(row) for row in self._rows()], self.blobs, clean)


def _target(text: str) -> tuple[str, str]:
    """NAMESPACE/NAME (every version of it) or NAMESPACE (all of it, '*')."""
    if "/" not in text:
        return check_name(text, "namespace"), "*"
    ref = parse_ref(text)
    if ref.version:
        raise SteerlabError(f"a grant covers every version: name {ref.base}, not {ref}.")
    return ref.namespace, ref.name


def _row_order(row: Entry) -> tuple[int, int, int, int, str]:
    return (row.v_major, row.v_minor, row.v_patch, row.v_release, row.v_pre)


def _version_taken(ref: Ref) -> Conflict:
    return Conflict(f"{ref} already exists (or existed): published versions are immutable; publish a new version.")


def _latest(rows: list[Entry]) -> Entry:
    """The newest release; a pre-release only when there is no release (as package managers do)."""
    releases = [r for r in rows if r.v_release]
    return max(releases or rows, key=_row_order)


def _expect_kind(info: EntryInfo, kind: str) -> None:
    if info.kind != kind:
        raise SteerlabError(f"{info.ref} is a {info.kind}, not a {kind}.")


def _check_tags(tags: Iterable[str]) -> list[str]:
    unique = sorted({check_name(t.strip().lower(), "tag") for t in tags if t.strip()})
    if len(unique) > MAX_TAGS:
        raise SteerlabError(f"at most {MAX_TAGS} tags per entry; got {len(unique)}.")
    return unique


def _check_signature(pub: Publication, ref: Ref, checked: Checked, digest: str) -> str | None:
    if bool(pub.signature) != bool(pub.public_key):
        raise SteerlabError("a signature needs its public key and a public key its signature: send both or neither.")
    if not pub.signature or not pub.public_key:
        return None
    if not ref.version:
        raise SteerlabError(
            f"a signed upload names its version ({ref}@VERSION): the signature covers NAMESPACE/NAME@VERSION. "
            "`steerlab hub push` picks the next free version itself."
        )
    return signing.verify(pub.public_key, pub.signature, checked.kind, str(ref), digest, checked.card)


def _entry_row(
    ref: Ref,
    version: Version,
    pub: Publication,
    checked: Checked,
    digest: str,
    size: int,
    tags: list[str],
    key_id: str | None,
) -> Entry:
    return Entry(
        namespace=ref.namespace,
        name=ref.name,
        version=str(version),
        v_major=version.major,
        v_minor=version.minor,
        v_patch=version.patch,
        v_release=0 if version.pre else 1,
        v_pre=version.pre,
        kind=checked.kind,
        sha256=digest,
        size=size,
        description=(pub.description if pub.description is not None else checked.description)[:10_000],
        base_model=checked.base_model[:256],
        fingerprint=checked.fingerprint[:128],
        hidden_size=checked.hidden_size,
        n_layers=checked.n_layers,
        max_layer=checked.max_layer,
        license=checked.license[:128],
        author=checked.author[:256],
        created_at=checked.created_at[:64],
        card_json=json.dumps(checked.card, sort_keys=True),
        metrics_json=json.dumps(checked.metrics, sort_keys=True),
        signature=pub.signature or None,
        public_key=pub.public_key or None,
        key_id=key_id,
        tags=[EntryTag(tag=t) for t in tags],
        published_at=datetime.now(UTC),
    )


def _redact(url: str) -> str:
    """A catalogue URL without its password, for messages."""
    head, sep, tail = url.rpartition("@")
    if not sep or "://" not in head:
        return url
    scheme, _, creds = head.partition("://")
    return f"{scheme}://{creds.split(':')[0]}:***@{tail}"
