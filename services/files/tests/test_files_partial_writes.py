"""The files service's writes that span owners (a file's metadata, its readers, its owner's
list: three slots of a Redis Cluster, docs/cluster.md) are ordered single-key writes, not
transactions; these tests show that a failure between them is harmless."""
from files_service import FilesTestConfig, create_app
from webchat_common import as_mapping, keys
from webchat_testing.media import SAMPLES, Person


def test_an_upload_whose_metadata_write_failed_is_not_stored_nor_listed(redis_url, media_root, r):
    """The service's Redis user may write the owners' lists but not a file's metadata (an ACL):
    the upload's last write fails for real, after its first."""
    r.acl_setuser("files-partial", enabled=True, passwords=["+pw"], commands=["+@all"],
                  keys=["~session:*", "~user:*", "~media:owner:*", "%R~media:*"], reset=True)
    try:
        url = redis_url.replace("redis://", "redis://files-partial:pw@")
        app = create_app(as_mapping(FilesTestConfig, REDIS_URL=url, MEDIA_ROOT=str(media_root)))
        alice = Person(app, r, "alice")
        assert alice.upload("pic.png", SAMPLES["pic.png"][0]).status_code == 503
        [stray] = r.zrange(keys.media_by_owner("alice"), 0, -1)  # the first write was made
        assert not r.exists(keys.media(stray))
        assert sorted(p.name for p in media_root.iterdir() if p.is_file()) == []  # the file went
        assert alice.client.get("/media/", headers={"Accept": "application/json"}).json["media"] == []
        assert alice.client.get(f"/media/{stray}").status_code == 404
    finally:
        r.acl_deluser("files-partial")


def test_leftovers_of_a_deletion_cut_short_are_never_served(people, media_root, r):
    """A deletion removes the metadata first; a failure after it leaves the readers set and the
    owner's list entry, which grant nothing and list nothing."""
    alice, bob = people("alice"), people("bob")
    name = alice.upload("pic.png", SAMPLES["pic.png"][0]).json["name"]
    assert alice.client.post(f"/media/{name}/share", json={"users": ["bob"]},
                             headers={"X-CSRF-Token": alice.csrf}).status_code == 200
    assert bob.client.get(f"/media/{name}").status_code == 200
    r.delete(keys.media(name))  # where a deletion stops when its next write fails
    assert r.exists(keys.media_readers(name)) and r.zscore(keys.media_by_owner("alice"), name)
    assert (media_root / name).exists()
    assert bob.client.get(f"/media/{name}").status_code == 404
    assert alice.client.get(f"/media/{name}").status_code == 404
    assert alice.client.get("/media/", headers={"Accept": "application/json"}).json["media"] == []


def test_an_avatar_replaced_deletes_every_record_of_the_old_one(people, media_root, r):
    alice = people("alice")
    first = alice.upload("me.png", SAMPLES["pic.png"][0], path="/media/avatar").json["name"]
    alice.upload("me.gif", SAMPLES["anim.gif"][0], path="/media/avatar")
    assert not r.exists(keys.media(first), keys.media_readers(first))
    assert r.zscore(keys.media_by_owner("alice"), first) is None
    assert not (media_root / first).exists()
