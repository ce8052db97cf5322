// The HTTP side of the page: JSON from the services through the gateway, and uploads.

export async function getJSON(path) {
  const r = await fetch(path, { credentials: "same-origin", headers: { Accept: "application/json" } });
  if (!r.ok) throw new Error(path + ": " + r.status);
  return r.json();
}

// Upload a file to the files service (POST /media/ with the session's CSRF token), reporting
// progress (0..1) as it goes.  Resolves to the stored file's JSON; rejects with a sentence a
// person can act on (too large, a type that is not accepted, ...).
export async function upload(file, onProgress) {
  const me = await getJSON("/api/me");
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open("POST", "/media/");
    xhr.setRequestHeader("Accept", "application/json");
    xhr.setRequestHeader("X-CSRF-Token", me.csrf_token);
    xhr.upload.onprogress = (ev) => { if (ev.lengthComputable) onProgress(ev.loaded / ev.total); };
    xhr.onload = () => {
      let body = {};
      try { body = JSON.parse(xhr.responseText); } catch (e) { /* nginx's own 413 page is HTML */ }
      if (xhr.status >= 200 && xhr.status < 300) resolve(body);
      else if (xhr.status === 413) reject(new Error(body.error || file.name + " is too large to upload."));
      else reject(new Error(body.error || "The upload was refused (" + xhr.status + ")."));
    };
    xhr.onerror = () => reject(new Error("The upload failed: the connection was lost."));
    const form = new FormData();
    form.append("file", file);
    xhr.send(form);
  });
}
