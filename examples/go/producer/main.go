// A Go service using Celeriac: submit tasks and read their results with nothing but stubs
// generated from the broker's .proto files. Run a broker and a Python worker first (see
// README.md here), then:
//
//	producer [task name]       (default: examples.get_started.tasks.add)
//
// It prints one JSON line per step, which the project's tests read.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"

	celeriacv1 "celeriac.dev/gen/go/celeriac/v1"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/status"
)

// brokerAddress reads the address as the Python client does: CELERIAC_BROKER, host:port or
// grpc://host:port (grpcs:// needs TLS credentials, which this example does not set up).
func brokerAddress() string {
	raw := os.Getenv("CELERIAC_BROKER")
	if raw == "" {
		raw = "127.0.0.1:7475"
	}
	return strings.TrimSuffix(strings.TrimPrefix(raw, "grpc://"), "/")
}

// jsonArgs encodes task arguments the way every Celeriac client does: [args, kwargs] as JSON.
func jsonArgs(args ...any) *celeriacv1.Payload {
	body, err := json.Marshal([]any{args, map[string]any{}})
	if err != nil {
		panic(err)
	}
	return &celeriacv1.Payload{ContentType: "application/json", Body: body}
}

// decode reads a JSON result; a result in another content type is not this example's business.
func decode(payload *celeriacv1.Payload) any {
	if payload == nil || payload.ContentType != "application/json" {
		return nil
	}
	var value any
	if err := json.Unmarshal(payload.Body, &value); err != nil {
		return nil
	}
	return value
}

func report(step string, fields map[string]any) {
	fields["step"] = step
	line, err := json.Marshal(fields)
	if err != nil {
		panic(err)
	}
	fmt.Println(string(line))
}

// unary submits one task, then asks for its result; the broker holds the call until it is ready.
func unary(ctx context.Context, tasks celeriacv1.TaskServiceClient, name string) error {
	started := time.Now()
	submitted, err := tasks.Submit(ctx, &celeriacv1.SubmitRequest{
		Task: &celeriacv1.TaskSpec{Name: name, Args: jsonArgs(4, 4)},
	})
	if err != nil {
		return fmt.Errorf("submit: %w", err)
	}
	answer, err := tasks.GetResult(ctx, &celeriacv1.GetResultRequest{
		TaskId: submitted.TaskId, WaitMs: 20_000,
	})
	if err != nil {
		return fmt.Errorf("get result: %w", err)
	}
	report("unary", map[string]any{
		"task_id": submitted.TaskId,
		"state":   answer.Result.State.String(),
		"result":  decode(answer.Result.Result),
		"ms":      float64(time.Since(started).Microseconds()) / 1000,
	})
	return nil
}

// batch submits three tasks in one call and waits for all three results in one call.
func batch(ctx context.Context, tasks celeriacv1.TaskServiceClient, name string) error {
	specs := make([]*celeriacv1.TaskSpec, 0, 3)
	for i := 1; i <= 3; i++ {
		specs = append(specs, &celeriacv1.TaskSpec{Name: name, Args: jsonArgs(i, i)})
	}
	submitted, err := tasks.SubmitMany(ctx, &celeriacv1.SubmitManyRequest{Tasks: specs})
	if err != nil {
		return fmt.Errorf("submit many: %w", err)
	}
	ids := make([]string, 0, len(submitted.Results))
	for _, r := range submitted.Results {
		ids = append(ids, r.TaskId)
	}
	answer, err := tasks.GetResults(ctx, &celeriacv1.GetResultsRequest{TaskIds: ids, WaitMs: 20_000})
	if err != nil {
		return fmt.Errorf("get results: %w", err)
	}
	results := make([]any, 0, len(answer.Results))
	for _, r := range answer.Results {
		results = append(results, decode(r.Result))
	}
	report("batch", map[string]any{"results": results})
	return nil
}

// session runs several round trips over one Session stream: each submit asks the broker to
// push the task's result on the same stream once it is ready, so the wait costs no call.
// Calls here are one at a time, so every reply (answer or pushed result) is for the current
// trip; a real service would match replies to calls by call_id and task_id.
func session(ctx context.Context, tasks celeriacv1.TaskServiceClient, name string, trips int) error {
	stream, err := tasks.Session(ctx)
	if err != nil {
		return fmt.Errorf("open session: %w", err)
	}
	timings := make([]float64, 0, trips)
	var last any
	for trip := 1; trip <= trips; trip++ {
		started := time.Now()
		call := &celeriacv1.SessionCall{
			CallId: uint64(trip),
			Call: &celeriacv1.SessionCall_Submit{Submit: &celeriacv1.SubmitRequest{
				Task: &celeriacv1.TaskSpec{Name: name, Args: jsonArgs(trip, 1)},
			}},
			Watch: true,
		}
		if err := stream.Send(call); err != nil {
			return fmt.Errorf("session send: %w", err)
		}
		taskID, result := "", (*celeriacv1.TaskResult)(nil)
		early := map[string]*celeriacv1.TaskResult{}
		for result == nil {
			reply, err := stream.Recv()
			if err != nil {
				return fmt.Errorf("session receive: %w", err)
			}
			switch answer := reply.Reply.(type) {
			case *celeriacv1.SessionReply_Submit:
				taskID = answer.Submit.TaskId
				result = early[taskID]
			case *celeriacv1.SessionReply_Ready:
				for _, ready := range answer.Ready.Results {
					early[ready.TaskId] = ready
				}
				result = early[taskID]
			case *celeriacv1.SessionReply_Error:
				return fmt.Errorf("session submit refused: %s (%s)", answer.Error.Message, answer.Error.Reason)
			}
		}
		last = decode(result.Result)
		timings = append(timings, float64(time.Since(started).Microseconds())/1000)
	}
	if err := stream.CloseSend(); err != nil {
		return fmt.Errorf("session close: %w", err)
	}
	sort.Float64s(timings)
	report("session", map[string]any{"trips": trips, "last": last, "p50_ms": timings[len(timings)/2]})
	return nil
}

// refusal sends a task without a name: the broker refuses it and says why with a typed
// reason in a google.rpc.ErrorInfo status detail, which a program matches instead of text.
func refusal(ctx context.Context, tasks celeriacv1.TaskServiceClient) {
	_, err := tasks.Submit(ctx, &celeriacv1.SubmitRequest{
		Task: &celeriacv1.TaskSpec{Name: "", Args: jsonArgs()},
	})
	if err == nil {
		report("refusal", map[string]any{"refused": false})
		return
	}
	refused := status.Convert(err)
	fields := map[string]any{"code": int(refused.Code())}
	for _, detail := range refused.Details() {
		if info, ok := detail.(*errdetails.ErrorInfo); ok {
			fields["info"] = map[string]any{
				"reason": info.Reason, "domain": info.Domain, "metadata": info.Metadata,
			}
		}
	}
	report("refusal", fields)
}

func run() error {
	name := "examples.get_started.tasks.add"
	if len(os.Args) > 1 {
		name = os.Args[1]
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := grpc.DialContext(ctx, brokerAddress(), grpc.WithInsecure())
	if err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	defer conn.Close()
	tasks := celeriacv1.NewTaskServiceClient(conn)
	if err := unary(ctx, tasks, name); err != nil {
		return err
	}
	if err := batch(ctx, tasks, name); err != nil {
		return err
	}
	trips, err := strconv.Atoi(os.Getenv("CELERIAC_TRIPS"))
	if err != nil || trips < 1 {
		trips = 20
	}
	if err := session(ctx, tasks, name, trips); err != nil {
		return err
	}
	refusal(ctx, tasks)
	return nil
}

func main() {
	if err := run(); err != nil {
		fmt.Fprintf(os.Stderr, "producer failed: %v\n", err)
		os.Exit(1)
	}
}
