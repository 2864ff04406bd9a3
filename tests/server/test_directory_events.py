"""The directory's tree: events, teams, channels placed in them, dispatcher assignments."""

from __future__ import annotations

import pytest

from server.directory import (
    AlreadyExists,
    Directory,
    DirectoryError,
    Event,
    InvalidName,
    InvalidPlacement,
    InvalidRole,
    NotFound,
    Role,
    Team,
)


@pytest.fixture
def directory(tmp_path):
    d = Directory.open(tmp_path)
    yield d
    d.close()


@pytest.fixture
def fair(directory):
    """An event with two teams, channels in and out of them, and members."""
    event = directory.add_event("County Fair")
    fire = directory.add_team(event.id, "Fire")
    medical = directory.add_team(event.id, "Medical")
    ops = directory.create_channel("Fire Ops", team_id=fire.id)
    ems = directory.create_channel("EMS", team_id=medical.id)
    gate = directory.create_channel("Gate", event_id=event.id)
    bob = directory.add_user("bob", Role.GENERAL, "pw")
    for channel in (ops, ems, gate):
        directory.add_membership(bob.id, channel.id)
    return event, fire, medical, ops, ems, gate, bob


def test_event_round_trip(directory):
    parade = directory.add_event("  Parade ")
    assert parade == Event(parade.id, "Parade")
    assert parade.to_wire() == {"id": parade.id, "name": "Parade"}
    fair = directory.add_event("county fair")
    assert directory.get_event(parade.id) == parade
    assert directory.event_by_name("PARADE") == parade
    assert directory.list_events() == [fair, parade]  # by name, ignoring case
    assert directory.rename_event(fair.id, "County Fair") == Event(fair.id, "County Fair")
    assert directory.get_event(fair.id).name == "County Fair"
    assert directory.get_event(999) is None and directory.event_by_name("x") is None


def test_event_errors(directory):
    parade = directory.add_event("Parade")
    fair = directory.add_event("Fair")
    with pytest.raises(AlreadyExists, match="event 'parade' exists already"):
        directory.add_event("parade")
    with pytest.raises(AlreadyExists, match="event 'PARADE'"):
        directory.rename_event(fair.id, "PARADE")
    with pytest.raises(InvalidName, match="event name"):
        directory.add_event("a\nb")
    with pytest.raises(InvalidName):
        directory.rename_event(parade.id, "")
    for call in (lambda: directory.rename_event(99, "x"), lambda: directory.delete_event(99)):
        with pytest.raises(NotFound, match="no event 99"):
            call()
    assert directory.list_events() == [fair, parade]


def test_team_round_trip_and_uniqueness_per_event(directory):
    parade, fair = directory.add_event("Parade"), directory.add_event("Fair")
    fire = directory.add_team(parade.id, "Fire")
    assert fire == Team(fire.id, "Fire", parade.id)
    assert fire.to_wire() == {"id": fire.id, "name": "Fire", "event_id": parade.id}
    other_fire = directory.add_team(fair.id, "fire")  # same name, other event: fine
    site_fire = directory.add_team(None, "Fire")  # and site-wide
    assert site_fire.event_id is None
    ambulance = directory.add_team(parade.id, "Ambulance")
    assert directory.list_teams(parade.id) == [ambulance, fire]
    assert directory.list_teams(fair.id) == [other_fire]
    assert directory.list_teams(None) == [site_fire]
    assert directory.get_team(fire.id) == fire
    assert directory.team_by_name(parade.id, "FIRE") == fire
    assert directory.team_by_name(None, "fire") == site_fire

    with pytest.raises(AlreadyExists, match="team 'FIRE' in event 'Parade' exists already"):
        directory.add_team(parade.id, "FIRE")
    with pytest.raises(AlreadyExists, match="site-wide team 'fire'"):
        directory.add_team(None, "fire")
    with pytest.raises(AlreadyExists, match="team 'fire' in event 'Parade'"):
        directory.rename_team(ambulance.id, "fire")
    with pytest.raises(NotFound, match="no event 99"):
        directory.add_team(99, "x")
    with pytest.raises(InvalidName, match="team name"):
        directory.add_team(parade.id, " ")
    for call in (lambda: directory.rename_team(99, "x"), lambda: directory.delete_team(99)):
        with pytest.raises(NotFound, match="no team 99"):
            call()

    assert directory.rename_team(ambulance.id, "EMS") == Team(ambulance.id, "EMS", parade.id)
    assert directory.rename_team(fire.id, "FIRE").name == "FIRE"  # a change of case only


def test_channel_placement_by_ids(directory):
    parade, fair = directory.add_event("Parade"), directory.add_event("Fair")
    fire = directory.add_team(parade.id, "Fire")
    site_team = directory.add_team(None, "Command")

    ops = directory.create_channel("Ops", team_id=fire.id)  # the team implies its event
    assert (ops.team, ops.event, ops.team_id, ops.event_id) == (
        "Fire", "Parade", fire.id, parade.id)
    gate = directory.create_channel("Gate", event_id=fair.id)
    assert (gate.team, gate.event, gate.team_id, gate.event_id) == (None, "Fair", None, fair.id)
    both = directory.create_channel("Both", event_id=parade.id, team_id=fire.id)
    assert both.team_id == fire.id
    hq = directory.create_channel("HQ", team_id=site_team.id)
    assert (hq.team, hq.event_id) == ("Command", None)
    bare = directory.create_channel("Bare")
    assert (bare.team_id, bare.event_id) == (None, None)
    assert directory.channels_in_event(parade.id) == [both, ops]
    assert directory.channels_in_event(fair.id) == [gate]

    with pytest.raises(InvalidPlacement, match="team 'Fire' in event 'Parade'.*event 'Fair'"):
        directory.create_channel("Wrong", event_id=fair.id, team_id=fire.id)
    with pytest.raises(InvalidPlacement, match="site-wide team 'Command'"):
        directory.create_channel("Wrong", event_id=fair.id, team_id=site_team.id)
    with pytest.raises(NotFound, match="no event 99"):
        directory.create_channel("Wrong", event_id=99)
    with pytest.raises(NotFound, match="no team 99"):
        directory.create_channel("Wrong", team_id=99)
    with pytest.raises(AlreadyExists, match="channel 'ops'"):
        directory.create_channel("ops", event_id=fair.id)
    assert directory.channel_by_name("Wrong") is None
    assert issubclass(InvalidPlacement, DirectoryError)


def test_rename_and_move_channel(directory, fair):
    event, fire, medical, ops, ems, gate, bob = fair
    renamed = directory.rename_channel(ops.id, "Fire Ops 1")
    assert (renamed.id, renamed.name, renamed.team) == (ops.id, "Fire Ops 1", "Fire")
    with pytest.raises(AlreadyExists, match="channel 'ems'"):
        directory.rename_channel(ops.id, "ems")
    with pytest.raises(NotFound, match="no channel 99"):
        directory.rename_channel(99, "x")

    moved = directory.move_channel(gate.id, medical.id)
    assert (moved.team, moved.team_id, moved.event_id) == ("Medical", medical.id, event.id)
    loose = directory.move_channel(gate.id, None)
    assert (loose.team, loose.team_id, loose.event_id) == (None, None, event.id)

    other = directory.add_team(directory.add_event("Parade").id, "Police")
    site = directory.add_team(None, "Command")
    for team in (other, site):
        with pytest.raises(InvalidPlacement):
            directory.move_channel(gate.id, team.id)
    bare = directory.create_channel("Bare")
    with pytest.raises(InvalidPlacement, match="cannot hold a channel site-wide"):
        directory.move_channel(bare.id, fire.id)
    assert directory.move_channel(bare.id, site.id).team == "Command"
    with pytest.raises(NotFound, match="no team 99"):
        directory.move_channel(gate.id, 99)
    with pytest.raises(NotFound, match="no channel 99"):
        directory.move_channel(99, None)
    assert directory.get_channel(gate.id).team_id is None
    # Members stay put through renames and moves.
    assert [c.id for c in directory.channels_of(bob.id)] == [ems.id, ops.id, gate.id]


def test_renamed_team_and_event_show_in_channels(directory, fair):
    event, fire, medical, ops, ems, gate, bob = fair
    directory.rename_team(fire.id, "Fire & Rescue")
    directory.rename_event(event.id, "Fair 2025")
    assert directory.get_channel(ops.id).team == "Fire & Rescue"
    assert {c.event for c in directory.channels_of(bob.id)} == {"Fair 2025"}


def test_delete_team_keeps_its_channels_in_the_event(directory, fair):
    event, fire, medical, ops, ems, gate, bob = fair
    directory.delete_team(fire.id)
    assert directory.get_team(fire.id) is None
    kept = directory.get_channel(ops.id)
    assert (kept.team, kept.team_id, kept.event_id) == (None, None, event.id)
    assert directory.is_member(bob.id, ops.id)
    assert directory.list_teams(event.id) == [medical]


def test_delete_event_takes_its_teams_channels_members_and_dispatchers(directory, fair):
    event, fire, medical, ops, ems, gate, bob = fair
    amy = directory.add_user("amy", Role.DISPATCH, "pw")
    directory.assign_dispatcher(event.id, amy.id)
    other = directory.create_channel("Elsewhere")
    directory.add_membership(bob.id, other.id)

    directory.delete_event(event.id)
    assert directory.get_event(event.id) is None
    assert directory.list_teams(event.id) == [] and directory.get_team(fire.id) is None
    assert [c.id for c in directory.list_channels()] == [other.id]
    assert directory.channels_of(bob.id) == [other]
    assert directory.members_of(ops.id) == []
    assert directory.events_of_dispatcher(amy.id) == []
    assert directory.get_user(amy.id) == amy  # users are never deleted with an event


def test_dispatchers(directory):
    parade, fair = directory.add_event("Parade"), directory.add_event("Fair")
    amy = directory.add_user("amy", Role.DISPATCH, "pw")
    dan = directory.add_user("dan", Role.DISPATCH, "pw")
    gus = directory.add_user("gus", Role.GENERAL, "pw")
    root = directory.add_user("root", Role.ADMIN, "pw")

    directory.assign_dispatcher(parade.id, amy.id)
    directory.assign_dispatcher(parade.id, amy.id)  # idempotent
    directory.assign_dispatcher(fair.id, amy.id)
    directory.assign_dispatcher(parade.id, dan.id)
    assert directory.dispatchers_of(parade.id) == [amy, dan]
    assert directory.events_of_dispatcher(amy.id) == [fair, parade]
    assert directory.is_dispatcher_of(amy.id, fair.id)
    assert not directory.is_dispatcher_of(dan.id, fair.id)

    for user in (gus, root):
        with pytest.raises(InvalidRole, match=f"'{user.name}' is {user.role.value}"):
            directory.assign_dispatcher(parade.id, user.id)
    with pytest.raises(NotFound, match="no event 99"):
        directory.assign_dispatcher(99, amy.id)
    with pytest.raises(NotFound, match="no user 99"):
        directory.assign_dispatcher(parade.id, 99)

    directory.unassign_dispatcher(fair.id, amy.id)
    assert directory.events_of_dispatcher(amy.id) == [parade]
    with pytest.raises(NotFound, match="'amy' is not a dispatcher of event 'Fair'"):
        directory.unassign_dispatcher(fair.id, amy.id)
    with pytest.raises(NotFound, match="no user 99"):
        directory.unassign_dispatcher(fair.id, 99)

    # A dispatcher whose role changes loses the assignments; a deleted one too.
    directory.set_user_role(dan.id, Role.GENERAL)
    assert directory.dispatchers_of(parade.id) == [amy]
    directory.delete_user(amy.id)
    assert directory.dispatchers_of(parade.id) == []


def test_every_write_bumps_the_revision_and_a_failed_one_does_not(directory):
    revisions = [directory.revision()]

    def bumped(result=None):
        revisions.append(directory.revision())
        assert revisions[-1] > revisions[-2]
        return result

    event = bumped(directory.add_event("E"))
    bumped(directory.rename_event(event.id, "E2"))
    team = bumped(directory.add_team(event.id, "T"))
    bumped(directory.rename_team(team.id, "T2"))
    channel = bumped(directory.create_channel("C", event_id=event.id))
    bumped(directory.move_channel(channel.id, team.id))
    bumped(directory.rename_channel(channel.id, "C2"))
    amy = bumped(directory.add_user("amy", Role.DISPATCH, "pw"))
    bumped(directory.assign_dispatcher(event.id, amy.id))
    bumped(directory.unassign_dispatcher(event.id, amy.id))
    bumped(directory.delete_team(team.id))
    bumped(directory.delete_channel(channel.id))
    bumped(directory.delete_event(event.id))

    before = directory.revision()
    for call in (
        lambda: directory.add_event(""),
        lambda: directory.delete_event(event.id),
        lambda: directory.add_team(event.id, "x"),
        lambda: directory.move_channel(channel.id, None),
        lambda: directory.unassign_dispatcher(event.id, amy.id),
    ):
        with pytest.raises(DirectoryError):
            call()
    assert directory.revision() == before
