"""Unit: the request head's size bound, as the protocol feeds it reads and parser callbacks."""

from __future__ import annotations

import pytest

from edgecli.http_protocol import MAX_HEAD, Head, HeadBound, HeadTooLarge

pytestmark = pytest.mark.timeout(10)


def test_a_head_trickling_in_over_reads_is_refused_past_the_bound() -> None:
    bound = HeadBound()
    assert bound.state is Head.WAITING
    refused = False
    for _ in range(MAX_HEAD // 1024 + 1):  # reads of 1 KB, none ending the head
        bound.read_begins()
        refused = bound.read_ends(1024)
        if refused:
            break
        assert bound.state is Head.ARRIVING
    assert refused and bound.state is Head.REFUSED
    bound.read_begins()
    assert not bound.read_ends(1024)  # refused once


def test_one_read_holding_an_oversized_head_is_stopped_by_the_parser_count() -> None:
    bound = HeadBound()
    bound.read_begins()
    bound.message_begins()
    bound.parsed_part(MAX_HEAD // 2)
    with pytest.raises(HeadTooLarge):
        bound.parsed_part(MAX_HEAD // 2 + 1)
    assert bound.state is Head.REFUSED


def test_a_head_that_ends_starts_the_count_again_and_its_body_is_not_head() -> None:
    bound = HeadBound()
    bound.read_begins()
    bound.message_begins()
    bound.parsed_part(MAX_HEAD - 10)
    bound.head_ends()
    assert not bound.read_ends(MAX_HEAD)  # the head ended in this read: the rest is body
    assert (bound.state, bound.parsed, bound.unended) == (Head.DONE, 0, 0)
    bound.read_begins()
    assert not bound.read_ends(10 * MAX_HEAD)  # a large body, read by itself
    bound.message_ends()
    assert bound.state is Head.WAITING


def test_a_next_head_begun_in_the_read_that_ended_a_body_is_arriving() -> None:
    """What lending asks (`between_requests`): a connection with part of its next request read is not
    between requests, though no byte of that head was counted yet."""
    bound = HeadBound()
    bound.read_begins()
    bound.message_begins()
    bound.parsed_part(40)
    bound.head_ends()
    bound.message_ends()
    bound.message_begins()  # "GE" of the next request, in the same read
    assert not bound.read_ends(200)
    assert bound.state is Head.ARRIVING
