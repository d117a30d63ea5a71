// Lets a client that speaks another format in: {"user": ..., "conversation": ..., "message": ...}.
// Requests already in the Webhook Endpoint format pass through unchanged.
async function handleInput({ endpoint, request }) {
  const b = request.body;
  if (b && b.user && b.conversation) {
    return { userId: String(b.user), sessionId: String(b.conversation), text: b.message, data: b.attachments ? { attachments: b.attachments } : undefined };
  }
  return b;
}
