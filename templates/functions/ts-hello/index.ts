// JSON in, JSON out in TypeScript: the Supabase starter function, served by Deno beside Python functions.
//
// Needs Deno: `pip install 'edgecli[deno]'`. Try it:
//     edgecli invoke __NAME__ --data '{"name": "Functions"}'

interface HelloRequest {
  name?: string;
}

Deno.serve(async (req: Request) => {
  const { name = "world" }: HelloRequest = req.method === "POST" ? await req.json() : {};
  console.log(`__NAME__ says hello to ${name}`);
  return new Response(JSON.stringify({ message: `Hello ${name}!` }), {
    headers: { "Content-Type": "application/json" },
  });
});
